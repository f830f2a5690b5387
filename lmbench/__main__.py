from lmbench.cli.main import main

main()

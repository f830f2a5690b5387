"""lmbench's config groups. The folder stays at the top of the repository; the build ships it inside
the package as `lmbench.conf`, where Hydra reads it as `pkg://lmbench.conf` (see lmbench/paths.py).
Hydra's package config source wants this file: it is what makes the folder a package."""

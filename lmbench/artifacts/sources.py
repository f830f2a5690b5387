"""Where a trained model comes from: a folder, a run id, `runs:/<id>[/model]`, `models:/<name>/<version>`.

`resolve(source)` gives the bundle folder on local disk. A folder is used where it is (a bundle, a
Hydra run folder's `model/`, a downloaded MLflow model); anything else is fetched from the MLflow
store. Artifacts of a finished run never change, so its downloads are cached by run id under
`<cache>/models/`; a running run's are fetched afresh into a temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from lmbench import tracking
from lmbench.artifacts.format import META_FILE, ModelNotFound, find_bundle_folder
from lmbench.paths import default_cache_dir

RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve(
    source: str | Path, tracking_uri: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str | None]:
    """(bundle folder on local disk, MLflow run id if the source named one)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        found = find_bundle_folder(path)
        if found is None:
            raise ModelNotFound(
                f"{path} holds no lmbench model: expected {META_FILE} in it, in {path}/model/ (a run "
                f"folder) or in the artifacts of an MLflow model folder (MLmodel)"
            )
        return found, None
    if RUN_ID.fullmatch(text):
        text = f"runs:/{text}/model"
    if ":/" not in text:
        raise ModelNotFound(
            f"{source!r} is neither a folder nor an MLflow run id or URI (runs:/<run id>/model, "
            "models:/<name>/<version>)"
        )
    return _download(text, tracking_uri, cache_dir)


def _download(uri: str, tracking_uri: str | None, cache_dir: str | Path | None) -> tuple[Path, str | None]:
    tracking_uri = tracking.resolve_uri(tracking_uri, Path.cwd())
    run_id = None
    match = re.fullmatch(r"runs:/([^/]+)(?:/(.*))?", uri)
    if match:
        run_id, sub = match.group(1), (match.group(2) or "model").strip("/")
        uri = f"runs:/{run_id}/{sub}"
        status = tracking.run_status(tracking_uri, run_id)
        if status is None:
            raise ModelNotFound(f"there is no run {run_id} in the MLflow store {tracking_uri}")
        key = f"{run_id}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', sub)}"
        cacheable = status == "FINISHED"
    else:
        key, cacheable = None, False
    target = default_cache_dir(cache_dir) / "models" / key if key else None
    if target is not None and cacheable:
        found = find_bundle_folder(target)
        if found is not None:
            return found, run_id
    tmp = Path(tempfile.mkdtemp(prefix="lmbench-model-"))
    try:
        local = tracking.download(uri, tracking_uri, tmp)
    except Exception as ex:
        shutil.rmtree(tmp, ignore_errors=True)
        if run_id is not None:
            raise ModelNotFound(
                f"run {run_id} has no logged model at {uri} (it may have failed before the end, or "
                f"ran with tracking.log_model=false): {ex}"
            ) from None
        raise ModelNotFound(f"cannot fetch {uri} from {tracking_uri}: {ex}") from None
    found = find_bundle_folder(Path(local))
    if found is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelNotFound(f"{uri} is not an lmbench model (no {META_FILE} in it)")
    if target is None or not cacheable:
        return found, run_id  # left in the temporary folder
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    found = find_bundle_folder(target)
    if found is None:
        raise ModelNotFound(f"the cached copy of {uri} in {target} is not readable; delete it")
    return found, run_id

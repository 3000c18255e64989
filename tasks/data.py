from pathlib import Path

from prefect import task

from visiongate import versioning


@task(retries=2, retry_delay_seconds=[5, 20])
def version_data(root: str, dataset: str) -> dict[str, str]:
    """Bring the DVC data stages up to date; return the md5 pinning each split."""
    return versioning.reproduce(Path(root), dataset)

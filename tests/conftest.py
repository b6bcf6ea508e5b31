import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo_dir() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """`../shared` beside the clone (CI always has it); tests needing research-only data skip without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a user's clone): this test needs the research-only gt-sample data")
    return SHARED


@pytest.fixture(scope="session")
def gt_sample_dir(shared_dir) -> pathlib.Path:
    d = shared_dir / "data" / "gt-sample"
    if not d.is_dir():
        pytest.skip(f"{d} is absent: the research-only ground-truth sample is not available here")
    return d



"""serve.versions: TF Serving's version lifecycle, policies, labels, refcounted handles and
errors. Most tests use a fake loader (no TensorFlow); the hot-swap and corrupt-version tests
load real SavedModels."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models.layout import parse_version_name, scan_versions
from serve.errors import Code, ServingError
from serve.types import BatchingParams, ModelConfig, VersionPolicy, VersionState
from serve.versions.manager import ModelManager


class FakeServable:
    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, path
        self.runtime, self.signatures, self.metadata = "fake", {}, None

    def predict(self, signature_name, inputs, output_filter=()):
        n = len(next(iter(inputs.values())))
        return {"version": np.full(n, self.version)}


class FakeLoader:
    """Loads a folder unless it holds a file `broken`; remembers every load."""

    def __init__(self) -> None:
        self.loads: list[int] = []
        self.gate: threading.Event | None = None

    def __call__(self, name, version, path, *, runtime, enable_warmup):
        self.loads.append(version)
        if self.gate is not None:
            assert self.gate.wait(5)
        if (Path(path) / "broken").exists():
            raise ServingError(Code.DATA_LOSS, f"broken model at {path}")
        return FakeServable(name, version, Path(path))


def _versions(base: Path, *numbers: int | str) -> Path:
    for n in numbers:
        (base / str(n)).mkdir(parents=True, exist_ok=True)
    return base


def _manager(base: Path, policy: VersionPolicy | None = None, labels=None, **kwargs):
    config = ModelConfig("m", base, policy or VersionPolicy(), labels or {})
    loader = FakeLoader()
    manager = ModelManager([config], poll_wait_s=0, loader=loader, **kwargs)
    return manager, loader


def _states(manager: ModelManager, name: str = "m") -> dict[int, str]:
    return {s.version: s.state.name for s in manager.status(name)}


def _error(fn, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args, **kwargs)
    return info.value


def test_version_folder_names_parse_like_simple_atoi() -> None:
    assert parse_version_name("007") == 7
    assert parse_version_name("123") == 123
    assert parse_version_name("+5") == 5
    for name in (".3.staging-x1", "abc", "1a", "-1", "", "99999999999999999999"):
        assert parse_version_name(name) is None


def test_scan_keeps_numbered_folders_only(tmp_path: Path) -> None:
    _versions(tmp_path, 1, "007", ".8.staging", "notes")
    (tmp_path / "9").write_text("a file, not a folder")
    assert sorted(scan_versions(tmp_path)) == [1, 7]
    _versions(tmp_path, "001")  # a duplicate of 1: the name sorting last wins, as in TF Serving
    assert scan_versions(tmp_path)[1] == tmp_path / "1"


def test_latest_policy_serves_the_highest_version(tmp_path: Path) -> None:
    manager, loader = _manager(_versions(tmp_path, 1, 2, "003"))
    manager.start()
    assert _states(manager) == {3: "AVAILABLE"}
    with manager.acquire("m") as servable:
        assert servable.version == 3
    assert manager.is_ready("m") and manager.model_names() == ["m"]


def test_latest_n_all_and_specific_policies(tmp_path: Path) -> None:
    base = _versions(tmp_path, 1, 2, 3)
    manager, _ = _manager(base, VersionPolicy("latest", num_versions=2))
    manager.start()
    assert manager.available_versions("m") == [2, 3]
    manager, _ = _manager(base, VersionPolicy("all"))
    manager.start()
    assert manager.available_versions("m") == [1, 2, 3]
    manager, _ = _manager(base, VersionPolicy("specific", versions=(1, 9)))
    manager.start()
    assert manager.available_versions("m") == [1]
    with manager.acquire("m", version=1) as servable:
        assert servable.version == 1


def test_request_errors_use_tf_servings_texts(tmp_path: Path) -> None:
    manager, _ = _manager(_versions(tmp_path, 1), labels={"stable": 1})
    manager.start()

    def acquire(*args, **kwargs):
        with manager.acquire(*args, **kwargs):
            pass

    err = _error(acquire, "nope")
    assert (err.code, err.message) == (
        Code.NOT_FOUND, "Servable not found for request: Latest(nope)"
    )
    err = _error(acquire, "m", version=7)
    assert (err.code, err.message) == (
        Code.NOT_FOUND, "Servable not found for request: Specific(m, 7)"
    )
    err = _error(acquire, "m", label="beta")
    assert (err.code, err.message) == (
        Code.INVALID_ARGUMENT, "Unrecognized servable version label: beta"
    )
    assert _error(acquire, "nope", label="stable").code == Code.INVALID_ARGUMENT
    err = _error(manager.status, "nope")
    assert (err.code, err.message) == (Code.NOT_FOUND, "Could not find any versions of model nope")
    err = _error(manager.status, "m", 7)
    assert (err.code, err.message) == (Code.NOT_FOUND, "Could not find version 7 of model m")
    assert manager.status("m", label="stable")[0].state == VersionState.AVAILABLE


def test_labels_point_only_at_available_versions(tmp_path: Path) -> None:
    base = _versions(tmp_path, 1, 2)
    manager, _ = _manager(base, VersionPolicy("all"), labels={"stable": 1, "canary": 2,
                                                               "next": 3})
    manager.start()
    with manager.acquire("m", label="stable") as servable:
        assert servable.version == 1
    with manager.acquire("m", label="canary") as servable:
        assert servable.version == 2
    assert manager.resolve("m", label="canary") == 2
    with pytest.raises(ServingError) as info:
        with manager.acquire("m", label="next"):
            pass
    assert info.value.code == Code.UNAVAILABLE
    assert info.value.message == (
        "Version label next of model m points to version 3, which is not available (not loaded)"
    )


def test_a_new_version_loads_before_the_old_one_unloads(tmp_path: Path) -> None:
    base = _versions(tmp_path, 1)
    manager, loader = _manager(base)
    manager.start()
    seen_during_load: dict[int, str] = {}
    inner = loader.__call__

    def spy(name, version, path, **kw):
        seen_during_load.update(_states(manager))
        return inner(name, version, path, **kw)

    manager._loader = spy
    _versions(base, 2)
    manager.poll_once()
    assert seen_during_load == {1: "AVAILABLE", 2: "LOADING"}
    assert _states(manager) == {2: "AVAILABLE", 1: "END"}
    assert [s.version for s in manager.status("m")] == [2, 1]  # newest first, END kept


def test_a_failed_version_is_end_with_its_error_and_the_old_one_keeps_serving(
    tmp_path: Path,
) -> None:
    base = _versions(tmp_path, 1, 2)
    (base / "2" / "broken").write_text("x")
    manager, loader = _manager(base)
    manager.poll_once()  # 2 fails; 1 is not aspired, so nothing serves yet
    assert _states(manager) == {2: "END"}
    status = manager.status("m", 2)[0]
    # clients read the model and version, never the server's folders (the log keeps them)
    assert (status.error_code, status.error_message) == (
        Code.DATA_LOSS, "broken model at <model m version 2>"
    )
    # with 1 serving first, a broken 2 leaves 1 serving
    base2 = _versions(tmp_path / "b", 1)
    manager, loader = _manager(base2)
    manager.poll_once()
    _versions(base2, 2)
    (base2 / "2" / "broken").write_text("x")
    manager.poll_once()
    assert _states(manager) == {2: "END", 1: "AVAILABLE"}
    manager.poll_once()
    assert loader.loads == [1, 2]  # unchanged on disk: not retried
    (base2 / "2" / "broken").unlink()  # the folder changes: retried
    manager.poll_once()
    assert loader.loads == [1, 2, 2]
    assert _states(manager) == {2: "AVAILABLE", 1: "END"}
    assert manager.status("m", 2)[0].error_code == Code.OK


def test_a_version_removed_from_disk_is_unloaded(tmp_path: Path) -> None:
    base = _versions(tmp_path, 1, 2)
    manager, _ = _manager(base, VersionPolicy("all"))
    manager.poll_once()
    shutil.rmtree(base / "1")
    manager.poll_once()
    assert _states(manager) == {2: "AVAILABLE", 1: "END"}
    shutil.rmtree(base / "2")  # nothing aspired at all: the last one goes too
    manager.poll_once()
    assert _states(manager) == {2: "END", 1: "END"}
    assert not manager.is_ready("m")


def test_a_missing_base_path_keeps_serving_what_is_loaded(tmp_path: Path) -> None:
    base = _versions(tmp_path / "m", 1)
    manager, _ = _manager(base)
    manager.poll_once()
    base.rename(tmp_path / "moved")
    manager.poll_once()
    assert _states(manager) == {1: "AVAILABLE"}


def test_unloading_waits_for_requests_in_flight(tmp_path: Path) -> None:
    base = _versions(tmp_path, 1)
    manager, _ = _manager(base)
    manager.poll_once()
    holding, release = threading.Event(), threading.Event()

    def request():
        with manager.acquire("m"):
            holding.set()
            release.wait(5)

    worker = threading.Thread(target=request)
    worker.start()
    assert holding.wait(5)
    reload = threading.Thread(target=manager.reload_config, args=([],))
    reload.start()
    time.sleep(0.2)
    assert _states(manager) == {1: "UNLOADING"}
    release.set()
    worker.join(5)
    reload.join(5)
    assert _states(manager) == {1: "END"}
    assert manager.model_names() == []


def test_reload_config_adds_and_removes_models(tmp_path: Path) -> None:
    a, b = _versions(tmp_path / "a", 1), _versions(tmp_path / "b", 4)
    loader = FakeLoader()
    manager = ModelManager([ModelConfig("a", a)], poll_wait_s=0, loader=loader).start()
    manager.reload_config([ModelConfig("b", b)])
    assert manager.model_names() == ["b"]
    assert manager.is_ready("b") and not manager.is_ready("a")
    assert _states(manager, "a") == {1: "END"}
    with pytest.raises(ServingError, match=r"Latest\(a\)"):
        with manager.acquire("a"):
            pass


def test_drain_refuses_new_requests_and_waits_for_in_flight_ones(tmp_path: Path) -> None:
    manager, _ = _manager(_versions(tmp_path, 1))
    manager.start()
    with manager.acquire("m"):
        assert manager.drain(0.05) is False
    assert manager.drain(0.05) is True
    with pytest.raises(ServingError) as info:
        with manager.acquire("m"):
            pass
    assert info.value.code == Code.UNAVAILABLE


def test_background_polling_picks_up_new_versions(tmp_path: Path) -> None:
    base = _versions(tmp_path, 1)
    loader = FakeLoader()
    manager = ModelManager([ModelConfig("m", base)], poll_wait_s=0.05, loader=loader)
    manager.start()
    try:
        _versions(base, 2)
        deadline = time.monotonic() + 5
        while manager.available_versions("m") != [2] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert manager.available_versions("m") == [2]
    finally:
        manager.stop()
    assert _states(manager) == {2: "END", 1: "END"}


def test_an_unexpected_loader_exception_is_an_unknown_error(tmp_path: Path) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("no")

    manager = ModelManager([ModelConfig("m", _versions(tmp_path, 1))], poll_wait_s=0,
                           loader=explode)
    manager.start()
    status = manager.status("m")[0]
    assert (status.state, status.error_code, status.error_message) == (
        VersionState.END, Code.UNKNOWN, "RuntimeError: no"
    )


def test_with_batching_the_servables_are_batched(tmp_path: Path) -> None:
    from serve.batching.scheduler import BatchingServable

    manager, _ = _manager(_versions(tmp_path, 1), batching=BatchingParams(num_batch_threads=1))
    manager.start()
    try:
        with manager.acquire("m") as servable:
            assert isinstance(servable, BatchingServable)
            assert servable.predict("", {"x": np.zeros((2, 1))})["version"].tolist() == [1, 1]
    finally:
        manager.stop()


# ---- real SavedModels ------------------------------------------------------------------------


@pytest.mark.slow
def test_hot_swap_under_load_drops_no_request_and_corrupt_versions_do_not_serve(
    tmp_path: Path,
) -> None:
    pytest.importorskip("tensorflow")
    from serve_models import half_plus_two_dir

    base = tmp_path / "hp"
    half_plus_two_dir(base / "1", offset=2.0)
    manager = ModelManager([ModelConfig("hp", base)], poll_wait_s=0.05)
    manager.start()
    failures: list[str] = []
    answers: set[float] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                with manager.acquire("hp") as servable:
                    y = servable.predict("", {"x": np.array([[2.0]], np.float32)})["y"]
                answers.add(float(y[0, 0]))
            except Exception as err:  # any failure is a dropped request
                failures.append(repr(err))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        staging = half_plus_two_dir(base / ".2.staging", offset=3.0)
        staging.rename(base / "2")
        _wait_for(lambda: manager.status("hp")[0].state == VersionState.AVAILABLE
                  and _states(manager, "hp").get(1) == "END")
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"garbage")
        _wait_for(lambda: _states(manager, "hp").get(3) == "END")
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        manager.stop()
    assert failures == []
    assert answers == {3.0, 4.0}  # v1 (0.5x+2) then v2 (0.5x+3), nothing else
    status = {s.version: s for s in manager.status("hp")}
    assert status[3].error_code == Code.DATA_LOSS and "DecodeError" in status[3].error_message
    assert status[2].state == VersionState.END  # stopped with the manager
    assert status[1].error_code == Code.OK


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_auto_batching_wraps_only_servables_with_pulsecast_metadata():
    from serve.batching.adaptive import AdaptiveBatcher
    from serve.versions.manager import _auto_batchable

    class Plain:
        metadata = None

        def prepare_inputs(self, *args):
            return None

    class Pulsecast(Plain):
        metadata = {"model_name": "m"}

    assert not _auto_batchable(Plain())
    assert _auto_batchable(Pulsecast())
    wrapped = AdaptiveBatcher(Pulsecast())
    try:
        assert wrapped.metadata == {"model_name": "m"}
    finally:
        wrapped.close()


def test_loading_a_version_freezes_the_heap_for_the_collector(tmp_path: Path) -> None:
    import gc

    gc.unfreeze()
    manager, _ = _manager(_versions(tmp_path / "m", 1))
    try:
        manager.poll_once()
        assert _states(manager) == {1: "AVAILABLE"}
        frozen = gc.get_freeze_count()
        assert frozen > 0  # what was loaded is out of the collector's full passes
        gc.unfreeze()
        manager.poll_once()  # nothing changed on disk: no collection, nothing frozen again
        assert gc.get_freeze_count() == 0
    finally:
        manager.stop()
        gc.unfreeze()


@pytest.mark.slow
def test_a_version_is_available_before_its_xla_runtime_and_unloads_cleanly_mid_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SavedModel serves as soon as the version is AVAILABLE while XLA compiles in the
    background (held here); the swap keeps the answers; unloading mid-compile is clean."""
    pytest.importorskip("tensorflow")
    from serve_models import write_pulsecast_lstm

    import serve.runtime.xla

    release = {1: threading.Event(), 2: threading.Event()}
    held = {1: threading.Event(), 2: threading.Event()}
    original = serve.runtime.xla.XlaPredict.mark_ready

    def mark_ready(self, size: int) -> None:  # hold each version's job before bucket 1 goes live
        version = int(threading.current_thread().name.rsplit("-", 1)[1])
        if size == 1:
            held[version].set()
            assert release[version].wait(60)
        original(self, size)

    monkeypatch.setattr(serve.runtime.xla.XlaPredict, "mark_ready", mark_ready)
    base = tmp_path / "m"
    write_pulsecast_lstm(base / "1")
    manager = ModelManager([ModelConfig("m", base)], poll_wait_s=0, auto_batching=32)
    x = np.random.default_rng(3).standard_normal((3, 16, 1)).astype(np.float32)
    try:
        manager.start()
        assert _states(manager) == {1: "AVAILABLE"} and held[1].wait(60)
        with manager.acquire("m") as servable:
            assert servable.runtime == "savedmodel"  # the first answer comes from the SavedModel
            before = servable.predict("", {"signal": x})["forecast"]
            release[1].set()
            assert servable.wait_for_runtime(120) == "xla"  # adopted eventually
            after = servable.predict("", {"signal": x})["forecast"]
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
        write_pulsecast_lstm(base / "2", seed=1)
        manager.poll_once()  # v2 AVAILABLE (its compile held), v1 unloaded
        assert _states(manager) == {2: "AVAILABLE", 1: "END"} and held[2].wait(60)
        with manager.acquire("m") as servable:
            assert servable.version == 2 and servable.runtime == "savedmodel"
            assert servable.predict("", {"signal": x})["forecast"].shape == (3, 4, 1)
    finally:
        release[1].set()
        threading.Timer(0.3, release[2].set).start()  # the step in progress ends later
        manager.stop()  # unloads v2 while its compile is held: waits for the step, cancels
    assert _states(manager) == {2: "END", 1: "END"}
    leaked = [t.name for t in threading.enumerate()
              if t.name.startswith(("xla-compile-m-", "autobatch-m-"))]
    assert leaked == []


def test_a_version_folder_linking_out_of_the_base_path_is_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    elsewhere = _versions(tmp_path / "elsewhere", 7)
    base = _versions(tmp_path / "store" / "m", 1)
    (base / "2").symlink_to(elsewhere / "7", target_is_directory=True)
    manager, _ = _manager(base)
    manager.poll_once()
    status = manager.status("m", 2)[0]
    assert status.state.name == "END" and status.error_code == Code.FAILED_PRECONDITION
    assert status.error_message == (
        "version 2 of model m is a link to a folder outside the model's base path; it is not "
        "served (start the server with --allow_version_links to serve such versions)")
    assert str(tmp_path) not in status.error_message
    # as any version that fails to load: latest-1 aspires 2 only, so nothing serves
    assert manager.available_versions("m") == []


def test_allow_version_links_serves_a_linked_version_folder(tmp_path: Path) -> None:
    elsewhere = _versions(tmp_path / "elsewhere", 7)
    base = _versions(tmp_path / "store" / "m", 1)
    (base / "2").symlink_to(elsewhere / "7", target_is_directory=True)
    manager, _ = _manager(base, allow_version_links=True)
    manager.poll_once()
    assert manager.available_versions("m") == [2]


def test_a_link_inside_the_base_path_is_served(tmp_path: Path) -> None:
    base = _versions(tmp_path / "store" / "m", 1)
    (base / "2").symlink_to(base / "1", target_is_directory=True)
    manager, _ = _manager(base)
    manager.poll_once()
    assert manager.available_versions("m") == [2]

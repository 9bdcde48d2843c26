"""Keeper's throttling models: the limiter's rules on a fake clock, then end to end with the stock SDK.

The SDK retries a throttle by itself (5 tries, ``retry_after`` ±25% jitter). Tests that look at a single throttled
answer switch those retries off; tests of the retry pin the jitter, so no test depends on a coin toss. Real-time
tests keep every timing margin at least ten times what a call takes here: throttles must come from the limits, never
from a slow machine.
"""

import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from keeper_secrets_manager_core import SecretsManager, core
from keeper_secrets_manager_core.configkeys import ConfigKeys
from keeper_secrets_manager_core.exceptions import KeeperThrottleError

from ksm_emulator import EmulatorServer
from ksm_emulator.throttle import BurstLimit, Limiter, RateLimit

from .conftest import ALICE_UID

# --- the rules, on a clock the test moves --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def burst_limiter(clock: FakeClock, burst: int = 3, quiet: float = 10.0) -> Limiter:
    return Limiter(burst=BurstLimit(burst, quiet), clock=clock)


def test_burst_throttles_the_request_after_n_per_endpoint_and_device(clock):
    limiter = burst_limiter(clock)

    assert [limiter.admit("dev1", "get_secret") for _ in range(3)] == [None, None, None]
    assert limiter.admit("dev1", "get_secret") == 10.0
    assert limiter.admit("dev1", "update_secret") is None
    assert limiter.admit("dev2", "get_secret") is None
    assert limiter.counts() == {
        "requests": {"dev1": {"get_secret": 4, "update_secret": 1}, "dev2": {"get_secret": 1}},
        "throttled": {"dev1": {"get_secret": 1}},
        "throttled_by": {"burst": 1},
        "throttled_total": 1,
    }


def test_burst_clears_only_after_a_quiet_pause(clock):
    limiter = burst_limiter(clock, burst=2, quiet=10.0)
    for _ in range(2):
        limiter.admit("dev", "get_secret")

    clock.advance(10.0)
    assert limiter.admit("dev", "get_secret") is None  # ten seconds of silence: a new count


def test_a_steady_trickle_is_throttled_once_it_passes_n(clock):
    limiter = burst_limiter(clock, burst=3, quiet=10.0)
    answers = []
    for _ in range(5):
        answers.append(limiter.admit("dev", "get_secret"))
        clock.advance(9.0)  # never a ten-second pause

    assert answers == [None, None, None, 10.0, 10.0]


def test_a_throttled_request_restarts_the_quiet_timer(clock):
    limiter = burst_limiter(clock, burst=1, quiet=10.0)
    limiter.admit("dev", "get_secret")
    clock.advance(9.0)
    assert limiter.admit("dev", "get_secret") == 10.0
    clock.advance(9.0)  # 18 s after the last accepted request, but only 9 s after the throttled one
    assert limiter.admit("dev", "get_secret") == 10.0
    clock.advance(10.0)  # waiting retry_after after the last answer is enough
    assert limiter.admit("dev", "get_secret") is None


def test_rate_limit_counts_every_endpoint_of_a_device_and_tells_when_a_slot_frees(clock):
    limiter = Limiter(rate=RateLimit(2, 60.0), clock=clock)
    assert limiter.admit("dev", "get_secret") is None
    clock.advance(20.0)
    assert limiter.admit("dev", "update_secret") is None
    clock.advance(10.0)

    assert limiter.admit("dev", "finalize_secret_update") == 30.0  # the first request leaves the window at t+60
    assert limiter.admit("other", "get_secret") is None
    clock.advance(29.999)
    assert limiter.admit("dev", "get_secret") == pytest.approx(0.001)  # refused requests took no slot
    clock.advance(0.001)
    assert limiter.admit("dev", "get_secret") is None
    assert limiter.admit("dev", "get_secret") == pytest.approx(20.0)


def test_retry_after_is_rounded_up_never_early(clock):
    limiter = Limiter(rate=RateLimit(1, 1.0), clock=clock)
    limiter.admit("dev", "get_secret")
    clock.advance(0.1234)

    retry_after = limiter.admit("dev", "get_secret")
    assert retry_after == 0.877
    clock.advance(retry_after)
    assert limiter.admit("dev", "get_secret") is None


def test_both_models_at_once(clock):
    limiter = Limiter(burst=BurstLimit(2, 10.0), rate=RateLimit(3, 60.0), clock=clock)
    assert [limiter.admit("dev", "get_secret") for _ in range(2)] == [None, None]
    assert limiter.admit("dev", "get_secret") == 10.0  # the burst refuses first; no rate slot taken
    assert limiter.admit("dev", "update_secret") is None
    assert limiter.admit("dev", "finalize_secret_update") == 60.0


@pytest.mark.parametrize(
    ("kind", "spec", "parsed", "text"),
    [
        (BurstLimit, "burst=100,quiet=10", BurstLimit(100, 10.0), "burst=100,quiet=10"),
        (BurstLimit, " burst = 5 , quiet = 0.5 ", BurstLimit(5, 0.5), "burst=5,quiet=0.5"),
        (RateLimit, "10/60", RateLimit(10, 60.0), "10/60"),
        (RateLimit, "10/6", RateLimit(10, 6.0), "10/6"),
        (RateLimit, "3/0.5", RateLimit(3, 0.5), "3/0.5"),
    ],
)
def test_specs_parse_and_print(kind, spec, parsed, text):
    assert kind.parse(spec) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        (BurstLimit, "100,10"),
        (BurstLimit, "burst=0,quiet=10"),
        (BurstLimit, "burst=5,quiet=0"),
        (BurstLimit, "quiet=10,burst=5"),
        (RateLimit, "10"),
        (RateLimit, "0/60"),
        (RateLimit, "10/0"),
        (RateLimit, "ten/60"),
    ],
)
def test_bad_specs_are_refused(kind, spec):
    with pytest.raises(ValueError):
        kind.parse(spec)


# --- end to end with the stock SDK ---------------------------------------------------------------------------------


class PinnedJitter:
    """Stands in for the SDK's ``random``: each throttle retry waits ``retry_after * (1 + the next fraction)``."""

    def __init__(self, *fractions: float) -> None:
        self._fractions = iter(fractions)

    def uniform(self, low: float, high: float) -> float:
        fraction = next(self._fractions, 0.0)
        assert low <= fraction <= high
        return fraction


@pytest.fixture
def no_sdk_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK raises KeeperThrottleError on the first throttled answer instead of sleeping and retrying."""
    monkeypatch.setattr(core, "MAX_THROTTLE_RETRIES", 0)


@pytest.fixture
def jitter(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def pin(*fractions: float) -> None:
        monkeypatch.setattr(core, "random", PinnedJitter(*fractions))

    return pin


def device(ksm: SecretsManager) -> str:
    return ksm.config.get(ConfigKeys.KEY_CLIENT_ID)


def save_password(ksm: SecretsManager, uid: str, password: str) -> None:
    (record,) = ksm.get_secrets([uid])
    record.set_standard_field_value("password", password)
    ksm.save(record)


@pytest.mark.usefixtures("no_sdk_retry")
def test_sdk_burst_throttles_one_endpoint_not_another_nor_another_device(emulator, ksm, make_client):
    emulator.vault.set_throttle(burst=3, quiet=30)  # 30 s: the four calls surely come without a pause
    (record,) = ksm.get_secrets([ALICE_UID])
    ksm.get_secrets([ALICE_UID])
    ksm.get_secrets([ALICE_UID])

    with pytest.raises(KeeperThrottleError):
        ksm.get_secrets([ALICE_UID])
    record.set_standard_field_value("password", "new")
    ksm.save(record)  # update_secret has its own counter
    assert len(make_client().get_secrets()) == 2  # and so has every other device

    assert emulator.vault.committed(ALICE_UID)["fields"][1]["value"] == ["new"]
    state = emulator.vault.throttle_state()
    assert state["throttle"] == {"burst": 3, "quiet": 30.0}
    assert state["throttled"] == {device(ksm): {"get_secret": 1}}
    assert state["requests"][device(ksm)] == {"get_secret": 4, "update_secret": 1}
    assert emulator.vault.throttled_total == 1


@pytest.mark.usefixtures("no_sdk_retry")
def test_sdk_burst_is_cleared_by_a_quiet_pause(emulator, ksm):
    quiet = 1.0  # 20x a call's time here: consecutive calls never leave such a gap by accident
    emulator.vault.set_throttle(burst=2, quiet=quiet)
    ksm.get_secrets()
    ksm.get_secrets()
    threading.Event().wait(2 * quiet)

    ksm.get_secrets()
    ksm.get_secrets()
    assert emulator.vault.throttled_total == 0
    with pytest.raises(KeeperThrottleError):
        ksm.get_secrets()
    assert emulator.vault.throttled_total == 1


@pytest.mark.usefixtures("no_sdk_retry")
def test_sdk_rate_limit_caps_a_device_over_all_endpoints(emulator, ksm, make_client):
    emulator.vault.set_rate_limit(requests=3, seconds=30)
    save_password(ksm, ALICE_UID, "first")  # get_secret + update_secret
    (record,) = ksm.get_secrets([ALICE_UID])

    with pytest.raises(KeeperThrottleError):
        ksm.get_secrets()
    record.set_standard_field_value("password", "second")
    with pytest.raises(KeeperThrottleError):
        ksm.save(record)
    assert len(make_client().get_secrets()) == 2

    assert emulator.vault.committed(ALICE_UID)["fields"][1]["value"] == ["first"]
    assert emulator.vault.throttle_state()["throttled"] == {device(ksm): {"get_secret": 1, "update_secret": 1}}


def test_sdk_retry_waits_out_the_rate_window(emulator, ksm, jitter):
    jitter(0.0)
    emulator.vault.set_rate_limit(requests=2, seconds=2.0)
    ksm.get_secrets()
    ksm.get_secrets()

    assert len(ksm.get_secrets()) == 2  # throttled once, then retried after retry_after
    assert emulator.vault.throttled_total == 1
    assert emulator.vault.throttle_state()["throttled_by"] == {"rate": 1}
    assert emulator.vault.calls["get_secret"] == 4


def test_sdk_retry_waits_out_the_burst_quiet_period(emulator, ksm, jitter):
    jitter(0.0)
    emulator.vault.set_throttle(burst=2, quiet=1.0)
    ksm.get_secrets()
    ksm.get_secrets()

    assert len(ksm.get_secrets()) == 2
    assert emulator.vault.throttled_total == 1


def test_an_early_sdk_retry_restarts_the_burst_timer(emulator, ksm, jitter):
    """The SDK's jitter may retry at 0.75 x retry_after: against the SDK's model that retry is throttled again and
    restarts the quiet period, so each retry is a coin toss (all five lose about 1 time in 32)."""
    quiet = 2.0  # the early retry lands 0.5 s before the timer would have expired: a wide margin
    jitter(-0.25, 0.0)
    emulator.vault.set_throttle(burst=1, quiet=quiet)
    ksm.get_secrets()

    assert len(ksm.get_secrets()) == 2
    assert emulator.vault.throttled_total == 2


@pytest.mark.usefixtures("no_sdk_retry")
def test_concurrent_devices_each_get_exactly_their_share(emulator, make_client):
    limit, threads_per_device, calls_per_thread = 5, 3, 4
    emulator.vault.set_rate_limit(requests=limit, seconds=60)
    clients = [make_client() for _ in range(2)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def hammer(ksm: SecretsManager) -> None:
        for _ in range(calls_per_thread):
            try:
                ksm.get_secrets()
                outcome = "ok"
            except KeeperThrottleError:
                outcome = "throttled"
            with lock:
                outcomes.append(outcome)

    workers = [threading.Thread(target=hammer, args=(c,)) for c in clients for _ in range(threads_per_device)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    per_device = threads_per_device * calls_per_thread
    assert outcomes.count("ok") == 2 * limit
    state = emulator.vault.throttle_state()
    for ksm in clients:
        assert state["requests"][device(ksm)] == {"get_secret": per_device}
        assert state["throttled"][device(ksm)] == {"get_secret": per_device - limit}
    assert state["throttled_total"] == 2 * (per_device - limit)


def test_throttle_answer_on_the_wire(emulator, ksm, monkeypatch):
    """What the SDK sees: 403 with error "throttled" and a numeric retry_after."""
    seen: list[requests.Response] = []
    post = SecretsManager.post_function

    def recording_post(*args, **kwargs):
        answer = post(*args, **kwargs)
        seen.append(answer.http_response)
        return answer

    monkeypatch.setattr(SecretsManager, "post_function", staticmethod(recording_post))
    monkeypatch.setattr(core, "MAX_THROTTLE_RETRIES", 0)
    emulator.vault.set_throttle(burst=1, quiet=30)
    ksm.get_secrets()
    with pytest.raises(KeeperThrottleError):
        ksm.get_secrets()

    assert seen[-1].status_code == 403
    assert seen[-1].json()["error"] == "throttled"
    assert seen[-1].json()["retry_after"] == 30.0


def test_limits_are_off_by_default_and_reset_restores_the_constructions(emulator, ksm):
    assert emulator.vault.throttle_state()["throttle"] is None
    assert emulator.vault.throttle_state()["rate_limit"] is None
    emulator.vault.set_throttle(burst=1, quiet=30)
    emulator.vault.set_rate_limit(requests=1, seconds=30)
    ksm.get_secrets()

    emulator.vault.reset()
    state = emulator.vault.throttle_state()
    assert (state["throttle"], state["rate_limit"], state["requests"], state["throttled_total"]) == (None, None, {}, 0)


def test_construction_limits_survive_reset():
    with EmulatorServer(throttle=BurstLimit(100, 10), rate_limit=RateLimit(10, 60)) as server:
        server.vault.set_throttle(None)
        server.vault.reset()
        assert server.vault.throttle_state()["throttle"] == {"burst": 100, "quiet": 10.0}
        assert server.vault.throttle_state()["rate_limit"] == {"requests": 10, "seconds": 60.0}


def test_reset_calls_clears_the_counts_not_the_limits(emulator, ksm):
    emulator.vault.set_throttle(burst=1, quiet=30)
    ksm.get_secrets()
    emulator.vault.reset_calls()

    assert emulator.vault.throttle_state()["requests"] == {}
    assert emulator.vault.admit(device(ksm), "get_secret") == 30.0  # the burst state is the service's, not a count


@pytest.fixture
def control(emulator) -> Iterator[Callable[..., requests.Response]]:
    session = requests.Session()
    session.verify = emulator.ca_file

    def call(method: str, name: str, body: object = None) -> requests.Response:
        return session.request(method, f"{emulator.url}/_emulator/{name}", json=body, timeout=5)

    yield call
    session.close()


@pytest.mark.usefixtures("no_sdk_retry")
def test_control_endpoint_switches_limits_and_reads_counts(control, ksm):
    assert control("POST", "throttle", {"burst": 1, "quiet": 30}).json() == {"ok": True}
    assert control("POST", "rate-limit", {"requests": 5, "seconds": 6}).json() == {"ok": True}
    ksm.get_secrets()
    with pytest.raises(KeeperThrottleError):
        ksm.get_secrets()

    state = control("GET", "throttle").json()
    assert state["throttle"] == {"burst": 1, "quiet": 30.0}
    assert state["rate_limit"] == {"requests": 5, "seconds": 6.0}
    assert state["throttled"] == {device(ksm): {"get_secret": 1}}
    assert state["requests"] == {device(ksm): {"get_secret": 2}}
    assert state["throttled_total"] == 1

    assert control("POST", "throttle", {"burst": None}).json() == {"ok": True}
    assert control("POST", "rate-limit", {"requests": None}).json() == {"ok": True}
    assert len(ksm.get_secrets()) == 2
    assert control("POST", "reset-calls").json() == {"ok": True}
    assert control("GET", "throttle").json()["throttled_total"] == 0


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("throttle", {"burst": 0}),
        ("throttle", {"burst": 5, "quiet": -1}),
        ("throttle", {"quiet": 5}),
        ("rate-limit", {"requests": "ten"}),
        ("rate-limit", {"requests": 10, "seconds": 0}),
    ],
)
def test_control_endpoint_refuses_bad_limits(control, name, body):
    response = control("POST", name, body)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"

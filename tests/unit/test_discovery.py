"""Which instances of a service take traffic, from Consul's health entries."""

from shopmesh.runtime.discovery import usable_addresses


def _entry(port: int, *checks: tuple[str, str]) -> dict:
    return {
        "Node": {"Address": "127.0.0.1"},
        "Service": {"Address": "127.0.0.1", "Port": port},
        "Checks": [{"Status": status, "Output": output} for status, output in checks],
    }


def test_passing_and_warning_instances_take_traffic_and_critical_ones_do_not():
    entries = [
        _entry(1, ("passing", "ok")),
        _entry(2, ("passing", "ok"), ("warning", "events wait")),
        _entry(3, ("critical", "connection refused")),
    ]
    assert usable_addresses(entries, ()) == ("127.0.0.1:1", "127.0.0.1:2")


def test_a_restarted_agents_checks_that_have_not_run_keep_the_known_instances():
    # Right after Consul restarts, every check is critical with no output until it runs once.
    entries = [_entry(1, ("passing", ""), ("critical", "")), _entry(2, ("critical", ""))]
    assert usable_addresses(entries, ("127.0.0.1:1", "127.0.0.1:2")) == ("127.0.0.1:1", "127.0.0.1:2")


def test_an_instance_never_seen_passing_waits_for_its_first_check():
    assert usable_addresses([_entry(4, ("critical", ""))], ("127.0.0.1:1",)) == ()


def test_a_known_instance_whose_check_ran_and_failed_is_dropped():
    entries = [_entry(1, ("critical", "rpc error: connection refused")), _entry(2, ("passing", "ok"))]
    assert usable_addresses(entries, ("127.0.0.1:1", "127.0.0.1:2")) == ("127.0.0.1:2",)


def _endpoints():
    from shopmesh.runtime.discovery import Endpoints
    from shopmesh.runtime.settings import Settings

    return Endpoints(Settings(), "inventory-service")


def test_an_instance_missing_for_a_moment_while_consul_restarts_is_kept_when_it_comes_back_unchecked():
    endpoints = _endpoints()
    endpoints.update([_entry(1, ("passing", "ok")), _entry(2, ("passing", "ok"))], now=100.0)
    # The restarting agent lists only one instance, then both again with their checks not yet run.
    endpoints.update([_entry(1, ("critical", ""))], now=101.0)
    endpoints.update([_entry(1, ("critical", "")), _entry(2, ("critical", ""))], now=101.5)
    assert endpoints.addresses == ("127.0.0.1:1", "127.0.0.1:2")


def test_an_instance_unseen_for_longer_than_the_memory_waits_for_its_check():
    from shopmesh.runtime.discovery import RECENT_SECONDS

    endpoints = _endpoints()
    endpoints.update([_entry(1, ("passing", "ok")), _entry(2, ("passing", "ok"))], now=100.0)
    endpoints.update([_entry(1, ("passing", "ok"))], now=101.0)
    endpoints.update([_entry(1, ("passing", "ok")), _entry(2, ("critical", ""))], now=101.0 + RECENT_SECONDS)
    assert endpoints.addresses == ("127.0.0.1:1",)
    # A check that ran and failed drops an instance at once, recent or not.
    endpoints.update([_entry(1, ("critical", "connection refused"))], now=102.0 + RECENT_SECONDS)
    assert endpoints.addresses == ()


def test_a_call_waits_a_moment_for_an_instance_while_consul_lists_none():
    import asyncio

    endpoints = _endpoints()

    async def scenario() -> str:
        endpoints.update([], now=1.0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, endpoints.update, [_entry(7, ("passing", "ok"))], 1.2)
        return await endpoints.next_address()

    assert asyncio.run(scenario()) == "127.0.0.1:7"


def test_instances_in_the_set_for_long_stay_when_a_restarted_consul_first_lists_them_unchecked():
    # A blocking query answers on changes only: the set may be an hour old when Consul restarts.
    endpoints = _endpoints()
    endpoints.update([_entry(1, ("passing", "ok")), _entry(2, ("passing", "ok"))], now=100.0)
    endpoints.update([_entry(1, ("critical", "")), _entry(2, ("critical", ""))], now=3700.0)
    assert endpoints.addresses == ("127.0.0.1:1", "127.0.0.1:2")


def test_a_restarted_consul_that_lists_no_instance_for_a_moment_empties_no_set():
    from shopmesh.runtime.discovery import RECENT_SECONDS

    endpoints = _endpoints()
    endpoints.update([_entry(1, ("passing", "ok")), _entry(2, ("passing", "ok"))], now=100.0)
    # The agent, just restarted, lists one instance, then none, while it syncs its services again.
    endpoints.update([_entry(2, ("critical", ""))], now=100.1)
    endpoints.update([], now=100.2)
    assert endpoints.addresses == ("127.0.0.1:2",)
    endpoints.update([_entry(1, ("critical", "")), _entry(2, ("critical", ""))], now=100.4)
    assert endpoints.addresses == ("127.0.0.1:1", "127.0.0.1:2")
    # Listed by none for longer than that: the service's instances have left.
    endpoints.update([], now=101.0)
    endpoints.update([], now=101.0 + RECENT_SECONDS)
    assert endpoints.addresses == ()


def test_instances_listed_as_failing_empty_the_set_at_once():
    endpoints = _endpoints()
    endpoints.update([_entry(1, ("passing", "ok"))], now=100.0)
    endpoints.update([_entry(1, ("critical", "connection refused"))], now=100.1)
    assert endpoints.addresses == ()

"""Which instances of a service take traffic, from Consul's health entries."""

from shopmesh.discovery import usable_addresses


def _entry(port: int, *checks: tuple[str, str]) -> dict:
    return {"Node": {"Address": "127.0.0.1"}, "Service": {"Address": "127.0.0.1", "Port": port},
            "Checks": [{"Status": status, "Output": output} for status, output in checks]}


def test_passing_and_warning_instances_take_traffic_and_critical_ones_do_not():
    entries = [_entry(1, ("passing", "ok")), _entry(2, ("passing", "ok"), ("warning", "events wait")),
               _entry(3, ("critical", "connection refused"))]
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

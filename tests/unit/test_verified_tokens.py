"""The cache of verified tokens: bounded, and never serving a token past its expiry."""

from shopmesh.runtime.auth import LEEWAY, VerifiedTokens


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_served_until_it_expires_then_verified_again():
    clock = Clock()
    cache = VerifiedTokens(clock=clock)
    cache.put("t", {"exp": 1_300, "sub": "u"})
    assert cache.get("t") == {"exp": 1_300, "sub": "u"}
    clock.now = 1_300 + LEEWAY - 0.001
    assert cache.get("t") is not None
    clock.now = 1_300 + LEEWAY
    assert cache.get("t") is None  # expired: the verifier checks it again, and refuses it
    assert cache.get("t") is None


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = VerifiedTokens(size=2, clock=Clock())
    cache.put("a", {"exp": 2_000})
    cache.put("b", {"exp": 2_000})
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", {"exp": 2_000})
    assert [token for token in "abc" if cache.get(token) is not None] == ["a", "c"]


def test_a_token_never_seen_is_not_served():
    assert VerifiedTokens(clock=Clock()).get("unknown") is None

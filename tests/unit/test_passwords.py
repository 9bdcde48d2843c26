"""The generator against many policies, judged by a checker written from IAM's documentation, not from the code."""

from hypothesis import given, settings
from hypothesis import strategies as st

from keeper_iam_rotator.passwords import PasswordPolicy, generate_password

from policy_checker import violations

policies = st.builds(
    PasswordPolicy,
    minimum_length=st.integers(min_value=6, max_value=128),
    require_uppercase=st.booleans(),
    require_lowercase=st.booleans(),
    require_numbers=st.booleans(),
    require_symbols=st.booleans(),
    custom=st.booleans(),
)


@settings(max_examples=400)
@given(policy=policies, length=st.integers(min_value=8, max_value=128))
def test_generated_password_satisfies_any_policy(policy, length):
    password = generate_password(policy, length).reveal()
    assert violations(password, policy) == []
    assert len(password) == min(128, max(length, policy.minimum_length))


def test_default_policy_gives_32_characters():
    assert len(generate_password(PasswordPolicy()).reveal()) == 32


def test_policy_minimum_above_default_length_wins():
    assert len(generate_password(PasswordPolicy(minimum_length=100, custom=True)).reveal()) == 100


def test_passwords_do_not_repeat():
    assert len({generate_password(PasswordPolicy()).reveal() for _ in range(500)}) == 500


def test_checker_catches_what_it_should():
    """The checker itself must be able to fail, or the property test above proves nothing."""
    strict = PasswordPolicy(minimum_length=12, require_symbols=True, require_numbers=True, custom=True)
    assert violations("short", strict)
    assert "missing required symbol" in violations("abcdefghijkl1A", strict)
    assert "fewer than three character classes" in violations("abcdefghijkl", PasswordPolicy())
    assert "a symbol IAM does not count" in violations("Abc1~defghij", PasswordPolicy())


def test_from_iam_reads_the_policy():
    policy = PasswordPolicy.from_iam(
        {"MinimumPasswordLength": 40, "RequireSymbols": True, "PasswordReusePrevention": 5}
    )
    assert (policy.minimum_length, policy.require_symbols, policy.custom) == (40, True, True)


def test_secret_never_shows_its_value():
    secret = generate_password(PasswordPolicy())
    assert secret.reveal() not in f"{secret} {secret!r} {[secret]}"

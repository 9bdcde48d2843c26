"""How step 1 looks IAM users up (issue 18): the account's directory (ListUsers) when it takes fewer calls than a
GetUser per user, else a GetUser each. moto answers ListUsers in one page whatever its size, so the pages here are
IAM's answers stubbed at botocore's boundary (Stubber); tests/test_fleet.py counts the calls against moto."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from keeper_iam_rotator import iam
from keeper_iam_rotator.iam import LIST_USERS_PAGE, IamGateway

ACCOUNT = "123456789012"


def arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def user(name: str) -> dict:
    return {"UserName": name, "Arn": arn(name), "Path": "/", "UserId": f"AIDA{name.upper():0<17}", "CreateDate": 0}


class Iam:
    """A gateway over a stubbed IAM client: `page(...)` and `get_user(...)` queue IAM's next answers."""

    def __init__(self) -> None:
        client = boto3.client("iam", region_name="us-east-1")
        self.stub = Stubber(client)
        self.gateway = IamGateway(client, client, sts=None, identity={"Account": ACCOUNT, "Arn": arn("x")})
        self._marker: str | None = None

    def page(self, *names: str, more: bool) -> None:
        expected = {"MaxItems": LIST_USERS_PAGE} | ({"Marker": self._marker} if self._marker else {})
        self._marker = f"after-{names[-1]}" if more else None
        answer = {"Users": [user(n) for n in names], "IsTruncated": more} | ({"Marker": self._marker} if more else {})
        self.stub.add_response("list_users", answer, expected)

    def get_user(self, name: str) -> None:
        self.stub.add_response("get_user", {"User": user(name)}, {"UserName": name})


@pytest.fixture
def stubbed() -> Iterator[Iam]:
    made = Iam()
    with made.stub:
        yield made
        made.stub.assert_no_pending_responses()


def test_one_lookup_is_a_get_user_and_no_listing(stubbed):
    stubbed.gateway.read_directory_for(1)
    stubbed.get_user("alice")
    assert stubbed.gateway.user_arn_of("alice") == arn("alice")


def test_a_directory_of_unknown_size_is_read_up_to_one_page_fewer_than_the_lookups_it_replaces(stubbed):
    stubbed.page("alice", "bob", more=True)
    stubbed.page("carol", more=True)  # budget reached (3 lookups: 2 pages): the third page is never asked for
    stubbed.gateway.read_directory_for(3)
    assert [stubbed.gateway.user_arn_of(n) for n in ("alice", "carol")] == [arn("alice"), arn("carol")]
    stubbed.get_user("dave")  # not reached by the listing: IAM is asked about it alone
    assert stubbed.gateway.user_arn_of("dave") == arn("dave")
    assert iam._directory_pages[ACCOUNT] == 3  # at least three pages: the next run of 3 lookups asks GetUser


def test_the_page_count_a_warm_container_learnt_decides_whether_the_next_run_lists(stubbed):
    stubbed.page("alice", more=True)
    stubbed.page("bob", more=False)
    stubbed.gateway.read_directory_for(10)
    assert iam._directory_pages[ACCOUNT] == 2
    next_run = Iam()  # a new invocation in the same container: its own gateway, nothing of the directory kept
    with next_run.stub:
        next_run.gateway.read_directory_for(2)  # two pages for two users: no cheaper than GetUser, so no listing
        next_run.get_user("bob")
        assert next_run.gateway.user_arn_of("bob") == arn("bob")  # what IAM says now, not what the last run read
        next_run.stub.assert_no_pending_responses()


def test_a_failed_listing_keeps_what_it_read_and_asks_iam_for_the_rest(stubbed):
    stubbed.page("alice", more=True)
    stubbed.stub.add_client_error("list_users", "Throttling", http_status_code=400)
    stubbed.gateway.read_directory_for(5)
    assert stubbed.gateway.user_arn_of("alice") == arn("alice")
    stubbed.get_user("bob")
    assert stubbed.gateway.user_arn_of("bob") == arn("bob")
    assert ACCOUNT not in iam._directory_pages  # nothing learnt: the next run tries again

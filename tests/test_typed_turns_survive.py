"""A typed line is never lost: not to a dropped connection, not to a session rollover.

A typed line becomes a user item with a client-chosen id, pending in `ConversationState`
until a response to it finishes. It is recorded to the transcript once, when the server
first confirms its id; every new session gets it again (after the seed) while it is pending,
with a ``response.create``. Unit tests drive the state with server events; the end-to-end
tests drop the connection the moment the line's ``conversation.item.create`` arrives, and
roll the session over while the line's reply is still owed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from realtime_voicebot.app import RunOptions
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.fake.config import Faults
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession

from .app_harness import Running, fake_config, settings_for, start_bot
from .spec import validate_client
from .state_helpers import Conversation
from .test_compaction_e2e import transcript_records, turn_texts, validate_sent

JSON = dict[str, object]


def user_records(conv: Conversation) -> list[str]:
    return [
        str(r["text"]) for r in conv.take_records() if r["type"] == "turn" and r["role"] == "user"
    ]


def creates(events: list[JSON]) -> list[str]:
    """Ids of the items that ``conversation.item.create`` events carry, in order."""
    ids = []
    for event in events:
        if event["type"] == "conversation.item.create":
            item = event["item"]
            assert isinstance(item, dict)
            ids.append(str(item.get("id")))
    return ids


def seed_of(sent: list[JSON]) -> str:
    [seed] = [e for e in sent if e.get("previous_item_id") == "root"]
    item = seed["item"]
    assert isinstance(item, dict)
    return str(item["content"][0]["text"])


def typed(conv: Conversation, text: str) -> tuple[str, list[JSON]]:
    """Type a line: its item id, and what the core sent for it."""
    sent = conv.take(conv.core.typed_line(text))
    return conv.core.turns.pending_typed_ids[-1], sent


# --- the session core ----------------------------------------------------------------------


def test_typed_turn_is_pending_until_answered_and_recorded_once_when_confirmed() -> None:
    conv = Conversation("ga")
    server, turns = conv.srv, conv.core.turns
    item_id, events = typed(conv, "what time is it")

    assert [e["type"] for e in events] == ["conversation.item.create", "response.create"]
    for event in events:
        validate_client(event, "ga")
    assert events[0]["item"]["id"] == item_id and "previous_item_id" not in events[0]
    assert events[0]["item"]["content"] == [{"type": "input_text", "text": "what time is it"}]
    assert conv.take(conv.core.typed_line("")) == []  # nothing new to send
    assert user_records(conv) == []  # not recorded before the server has it
    assert turns.pending_typed_ids[:1] == [item_id]

    conv.apply(server.item_added(server.text_item(item_id, "user", "what time is it")))
    assert user_records(conv) == ["what time is it"]
    conv.apply(server.response_created("resp_1"))
    assert item_id in turns.pending_typed_ids  # confirmed, but no reply yet
    conv.apply(server.response_done("resp_1"))
    assert item_id not in turns.pending_typed_ids

    sent = conv.new_session()
    assert item_id not in creates(sent[1:])  # answered: never sent again
    assert [r for r in conv.state.flush_records() if r["role"] == "user"][:0] == []
    # Answered lines are ordinary history: the seed carries them.
    assert "User: what time is it" in read_recap(seed_of(sent))[1]


def test_unconfirmed_typed_turn_is_sent_again_to_the_next_session_and_recorded_once() -> None:
    conv = Conversation("ga")
    server = conv.srv
    item_id, sent = typed(conv, "book a table")
    assert creates(sent) == [item_id]  # lost with the connection

    resent = conv.new_session()
    assert creates(resent) == [item_id] and resent[-1]["type"] == "response.create"
    assert not any(e.get("previous_item_id") == "root" for e in resent)  # not seeded as text

    conv.apply(server.item_added(server.text_item(item_id, "user", "book a table")))
    conv.apply(server.response_created("resp_2"))
    conv.apply(server.response_done("resp_2"))
    assert conv.core.turns.pending_typed_ids == []
    assert user_records(conv) == ["book a table"]
    assert conv.state.flush_records() == []
    assert conv.state.user_turns_since_compaction == 1


def test_confirmed_unanswered_turn_is_resent_not_seeded_and_not_recorded_twice() -> None:
    conv = Conversation("ga")
    server = conv.srv
    conv.apply(server.item_added(server.text_item("item_old", "user", "hello")))
    conv.apply(server.item_added(server.text_item("item_hi", "assistant", "hi there")))
    item_id, _ = typed(conv, "and the weather")
    conv.apply(server.item_added(server.text_item(item_id, "user", "and the weather")))
    conv.apply(server.response_created("resp_3"))  # no output yet when the session dies
    assert user_records(conv) == ["hello", "and the weather"]

    sent = conv.new_session()
    seeded = read_recap(seed_of(sent))[1]
    assert "User: hello" in seeded and "Assistant: hi there" in seeded
    assert not any("and the weather" in line for line in seeded)  # it goes back as itself
    resent = [e for e in sent if e.get("previous_item_id") != "root"]
    assert creates(resent) == [item_id] and resent[-1]["type"] == "response.create"

    conv.apply(server.item_added(server.text_item(item_id, "user", "and the weather")))
    conv.apply(server.response_created("resp_4"))
    conv.apply(server.response_done("resp_4"))
    assert conv.core.turns.pending_typed_ids == []
    assert user_records(conv) == []  # confirmed again: still one record
    assert conv.state.user_turns_since_compaction == 2


def test_a_reply_that_began_streaming_answers_the_line_and_is_carried_if_cut() -> None:
    conv = Conversation("ga")
    server = conv.srv
    item_id, _ = typed(conv, "tell me a story")
    conv.apply(server.item_added(server.text_item(item_id, "user", "tell me a story")))
    conv.apply(server.response_created("resp_5"))
    assert conv.core.turns.pending_typed_ids == [item_id]
    conv.apply(server.output_item_added("resp_5", server.assistant_item("item_story")))
    conv.apply(server.text_delta("resp_5", "item_story", "Once upon"))
    assert conv.core.turns.pending_typed_ids == []  # the reply began: the line is answered

    sent = conv.new_session()  # the connection dies mid-reply
    assert creates(sent) == [creates(sent)[0]]  # only the seed
    assert read_recap(seed_of(sent))[1][-2:] == ["User: tell me a story", "Assistant: Once upon"]


# --- end to end against the fake server ----------------------------------------------------


async def start_typing(
    server: FakeRealtimeServer, tmp_path: Path
) -> tuple[Running, asyncio.Queue[str | None]]:
    settings = settings_for(server, tmp_path, backoff_initial_s=0.02, backoff_max_s=0.05)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
    await running.session(1)
    await running.until(lambda: running.bot.client is not None and running.bot.client.connected)
    return running, lines


def received_creates(session: FakeSession) -> list[tuple[str | None, str]]:
    """(item id, role) of each ``conversation.item.create`` the session received."""
    return [
        (e["item"].get("id"), e["item"]["role"])
        for e in session.received
        if e["type"] == "conversation.item.create"
    ]


def check_answered_once(running: Running, session: FakeSession, item_id: str, text: str) -> None:
    """The session holds the line (its own id) answered after it; the transcript has it once."""
    ids = [item.id for item in session.items]
    assert item_id in ids
    after = session.items[ids.index(item_id) + 1 :]
    assert any(item.role == "assistant" and item.text for item in after)
    turns = turn_texts(transcript_records(running.bot.settings.transcript_path))
    assert [t for role, t in turns if role == "user"].count(text) == 1
    assert running.bot.core.turns.pending_typed_ids == []
    assert not running.view.errors
    validate_sent(session)


async def test_line_sent_right_before_a_drop_reaches_the_next_session(tmp_path: Path) -> None:
    # No scripted replies: the fake answers "You said: <the last user line>".
    async with FakeRealtimeServer(fake_config()) as server:
        running, lines = await start_typing(server, tmp_path)
        await lines.put("hello")
        await running.until(lambda: len(running.view.assistant) == 1, 10)
        first = server.sessions[0]
        first.faults.drop_on_client_event = "conversation.item.create"
        await lines.put("what time is it")
        second = await running.session(2)
        await running.until(lambda: len(running.view.assistant) == 2, 10)
        (typed_id, _) = received_creates(first)[-1]
        await lines.put("thanks")  # the conversation goes on in the new session
        await running.until(lambda: len(running.view.assistant) == 3, 10)
        assert await running.stop() == 0

    assert first.ended_by == "dropped"
    assert "what time is it" not in [item.text for item in first.items]  # dropped unprocessed
    # The seed (the first exchange) at root, then the lost line under its own id, answered.
    creates_2 = received_creates(second)
    assert creates_2[0][1] == "system" and creates_2[1] == (typed_id, "user")
    types = second.received_types()
    assert types[types.index("conversation.item.create", 2) + 1] == "response.create"
    check_answered_once(running, second, str(typed_id), "what time is it")
    assert running.view.assistant[1][1] == "You said: what time is it"
    assert running.bot.core.turns.stats.typed_lines_resent == 1


async def test_line_owed_a_reply_at_rollover_is_answered_by_the_new_session(
    tmp_path: Path,
) -> None:
    async with FakeRealtimeServer(fake_config(session_max_s=3.0)) as server:
        running, lines = await start_typing(server, tmp_path)
        first = server.sessions[0]
        # This session's reply is delayed past its end: the client rolls over (forced at the
        # deadline, as the reply is owed) with the line confirmed but unanswered.
        first.faults = Faults(response_delay_s=30.0)
        await lines.put("what time is it")
        second = await running.session(2)
        await running.until(lambda: len(running.view.assistant) == 1, 10)
        assert await running.stop() == 0

    assert first.ended_by == "client" and running.bot.client is not None
    assert running.bot.client.stats.rollovers >= 1
    ((typed_id, role),) = received_creates(first)
    assert role == "user" and typed_id in [item.id for item in first.items]  # confirmed there
    # Not in the seed as text: sent again as itself, with a response.create after it.
    assert (typed_id, "user") in received_creates(second)
    assert all("what time is it" not in item.text for item in second.items if item.role == "system")
    check_answered_once(running, second, str(typed_id), "what time is it")
    assert running.view.assistant[0][1] == "You said: what time is it"
    assert "response.created" in first.sent_types() and "response.done" not in first.sent_types()

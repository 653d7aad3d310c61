"""Saved chat conversations: stored in the workspace, listed newest first, reopened after a restart (a new Engine on
the same workspace), updated in place, exported, deleted; bad input changes nothing."""
import json

import pytest

from engine import Engine, Settings
from engine.errors import InvalidInput, NotFound

CHAT = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris.", "metadata": None}]


def test_a_saved_conversation_survives_a_restart_and_can_be_updated_exported_and_deleted(tmp_path):
    home = tmp_path / "ws"
    first = Engine(Settings(home=home, offline=True), recover=False)
    cid = first.conversations.save(CHAT, "smollm2-135m-instruct")
    other = first.conversations.save([{"role": "user", "content": "Hi"}], "m", title="greeting")
    first.close()
    again = Engine(Settings(home=home, offline=True), recover=False)
    try:
        saved = again.conversations.list()
        assert [c.id for c in saved] == [other, cid]  # newest first
        c = again.conversations.get(cid)
        assert c.title == "What is the capital of France?" and c.model_id == "smollm2-135m-instruct"
        assert c.messages == [{"role": "user", "content": CHAT[0]["content"]},
                              {"role": "assistant", "content": "Paris."}]  # what a chat UI adds is dropped
        longer = c.messages + [{"role": "user", "content": "And of Italy?"}]
        assert again.conversations.save(longer, "m", conversation_id=cid) == cid
        assert len(again.conversations.get(cid).messages) == 3 and again.conversations.list()[0].id == cid
        exported = json.loads(again.conversations.export_json(cid))
        assert exported["messages"][-1]["content"] == "And of Italy?"
        with pytest.raises(InvalidInput, match="empty"):
            again.conversations.save([], "m")
        with pytest.raises(InvalidInput, match="Message 1"):
            again.conversations.save([{"role": "robot", "content": "x"}], "m")
        again.conversations.delete(other)
        with pytest.raises(NotFound):
            again.conversations.delete(other)
        assert [c.id for c in again.conversations.list()] == [cid]
    finally:
        again.close()

"""Saved chat conversations: stored in the workspace database, listed newest first, reopened after a restart,
exported as JSON. The UI's per-session history stays in the browser session; saving copies it here."""
from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import InvalidInput, NotFound
from .store import utcnow

ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model_id: str
    messages: list[dict]
    created_at: str
    updated_at: str


def check_messages(messages: list[dict]) -> list[dict]:
    """Chat messages as {role, content} (anything else a chat UI adds is dropped); refuses an empty or odd list."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("Nothing to save: the conversation is empty. Send a message first.")
    out = []
    for n, m in enumerate(messages, 1):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InvalidInput(f"Message {n} is not a chat message (a role of {sorted(ROLES)} and text content).")
        out.append({"role": m["role"], "content": m["content"]})
    return out


class Conversations:
    def __init__(self, store):
        self.store = store

    def save(self, messages: list[dict], model_id: str, title: str = "", conversation_id: int | None = None) -> int:
        """Store a conversation (a new one, or over `conversation_id`); the title defaults to its first question."""
        messages = check_messages(messages)
        first = next((m["content"] for m in messages if m["role"] == "user"), "conversation")
        title = (title.strip() or " ".join(first.split())[:60]) or "conversation"
        row = {"title": title, "model_id": model_id or "", "messages_json": json.dumps(messages, ensure_ascii=False),
               "updated_at": utcnow()}
        table = self.store.db["conversations"]
        if conversation_id is not None:
            self.get(conversation_id)  # NotFound when it was deleted meanwhile
            table.update(conversation_id, row)
            return conversation_id
        return table.insert({**row, "created_at": row["updated_at"]}).last_pk

    @staticmethod
    def _record(r: dict) -> Conversation:
        return Conversation(r["id"], r["title"], r["model_id"], json.loads(r["messages_json"]), r["created_at"],
                            r["updated_at"])

    def get(self, conversation_id: int) -> Conversation:
        rows = list(self.store.db["conversations"].rows_where("id = ?", [conversation_id]))
        if not rows:
            raise NotFound(f"No saved conversation {conversation_id}.")
        return self._record(rows[0])

    def list(self) -> list[Conversation]:
        return [self._record(r) for r in self.store.db["conversations"].rows_where(
            order_by="updated_at desc, id desc")]

    def delete(self, conversation_id: int) -> None:
        with self.store.db.atomic() as db:
            gone = db.execute("DELETE FROM conversations WHERE id = ?", [conversation_id]).rowcount
        if not gone:
            raise NotFound(f"No saved conversation {conversation_id}.")

    def export_json(self, conversation_id: int) -> str:
        c = self.get(conversation_id)
        return json.dumps({"title": c.title, "model": c.model_id, "created_at": c.created_at,
                           "messages": c.messages}, ensure_ascii=False, indent=2)

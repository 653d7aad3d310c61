"""What a chat template puts around each message, derived by rendering probe conversations, for runtimes that take a
prompt template of their own: Ollama's Modelfile (engine/gguf_export.py) and Foundry Local's inference_model.json."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import InvalidInput

FOUNDRY_FILE = "inference_model.json"
CONTENT = "{Content}"  # Foundry Local's placeholder for a message's text


def _render(tokenizer, messages: list[dict], generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def chat_pieces(tokenizer) -> dict:
    """The text a chat template puts around each role's content, found by rendering probe conversations and
    taking the differences: {system: (before, after), user: …, assistant: …, generation: str, default_system}."""
    sys_, user, reply = "\x01SYSTEM\x01", "\x01USER\x01", "\x01REPLY\x01"
    s = _render(tokenizer, [{"role": "system", "content": sys_}])
    su = _render(tokenizer, [{"role": "system", "content": sys_}, {"role": "user", "content": user}])
    sua = _render(tokenizer, [{"role": "system", "content": sys_}, {"role": "user", "content": user},
                              {"role": "assistant", "content": reply}])
    su_gen = _render(tokenizer, [{"role": "system", "content": sys_}, {"role": "user", "content": user}], True)
    if not (su.startswith(s) and sua.startswith(su) and su_gen.startswith(su)):
        raise InvalidInput("The chat template does not render a conversation as a sequence of messages, so its "
                           "pieces per role cannot be derived; write the prompt template by hand.")

    def around(text: str, content: str) -> tuple[str, str]:
        before, _, after = text.partition(content)
        return before, after

    pieces = {"system": around(s, sys_), "user": around(su[len(s):], user), "assistant": around(sua[len(su):], reply),
              "generation": su_gen[len(su):]}
    alone = _render(tokenizer, [{"role": "user", "content": user}])  # a template may add a system prompt itself
    head = alone[:alone.index(user)][:-len(pieces["user"][0]) or None]
    before, after = pieces["system"]
    default = head[len(before):-len(after) or None] if head.startswith(before) and head.endswith(after) and head \
        else ""
    pieces["default_system"] = default
    return pieces


def foundry_inference_model(tokenizer, name: str) -> dict:
    """Foundry Local's inference_model.json for a model: its name and a PromptTemplate whose `prompt` is the chat
    template rendered around one user message "{Content}" with the generation prompt (as Foundry Local's
    documentation builds it), and `system` / `user` / `assistant` the text around each role's message."""
    prompt = _render(tokenizer, [{"role": "user", "content": CONTENT}], True)
    template = {"assistant": CONTENT, "prompt": prompt}
    try:
        pieces = chat_pieces(tokenizer)
    except InvalidInput:
        pass  # the documented minimum: prompt + assistant
    else:
        template = {role: pieces[role][0] + CONTENT + pieces[role][1] for role in ("system", "user", "assistant")}
        template["prompt"] = prompt
    return {"Name": name, "PromptTemplate": template}


def write_foundry_file(folder: Path, name: str, tokenizer) -> str | None:
    """Write inference_model.json into an ONNX Runtime GenAI folder; returns why not when the tokenizer has no chat
    template (then Foundry Local cannot chat with the folder as it is)."""
    if not getattr(tokenizer, "chat_template", None):
        return "the tokenizer has no chat template"
    data = foundry_inference_model(tokenizer, name)
    (Path(folder) / FOUNDRY_FILE).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return None

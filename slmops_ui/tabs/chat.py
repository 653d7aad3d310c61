"""Chat tab: talk to any registered model, alone or two side by side. History lives in gr.State per session;
*Saved conversations* stores it in the workspace (engine/conversations.py) to reopen after a restart."""
from __future__ import annotations

import queue
import threading

import gradio as gr

from engine import DEFAULT_MODEL_ID, GenerationParams

from .. import navigation
from ..forms import chat_choices, slider, ui_errors


def _speed(chunk) -> str:
    if chunk is None:
        return ""
    parts = [f"{chunk.new_tokens} tokens"]
    if chunk.seconds_to_first_token is not None:
        parts.append(f"first token after {chunk.seconds_to_first_token:.2f} s")
    if chunk.tokens_per_s:
        parts.append(f"**{chunk.tokens_per_s:.1f} tokens/s**")
    return " · ".join(parts)


# (name, system prompt, temperature, top-p): what the settings are for, picked in one go
PRESETS = [("Exact answers (greedy)", "", 0.0, 1.0),
           ("Brief", "Answer briefly, in one or two sentences.", 0.0, 1.0),
           ("JSON only", "Reply with one JSON object and nothing else.", 0.0, 1.0),
           ("Balanced sampling", "", 0.7, 0.9),
           ("Creative sampling", "", 1.0, 0.95)]


def build_chat_tab(engine) -> dict:
    stop_events: dict[str, threading.Event] = {}  # one per browser session, set by its Stop button

    def session_stop(request: gr.Request) -> threading.Event:
        event = threading.Event()
        stop_events[request.session_hash] = event
        return event

    def params(system, temperature, top_p, max_new) -> GenerationParams:
        return GenerationParams(system_prompt=system or "", temperature=temperature, top_p=top_p,
                                max_new_tokens=int(max_new))

    with gr.Row():
        model = gr.Dropdown(label="Model", choices=[], value=None, allow_custom_value=False, scale=3,
                            elem_id="chat-model", info="Any registered, ready model (an export's adapter as "
                            "EXPORT:ADAPTER). Loaded once, then kept in memory.")
        refresh = gr.Button("↻ Refresh models", scale=0, min_width=140)
    navigation.picker("chat", model)
    with gr.Accordion("Generation settings", open=False):
        preset = gr.Dropdown(label="Preset", choices=[name for name, *_ in PRESETS], value=None, elem_id="chat-preset",
                             info="Fills the system prompt and the sampling settings below; change any of them after.")
        system = gr.Textbox(label="System prompt", lines=2, placeholder="Optional, e.g. 'Answer briefly.'")
        with gr.Row():
            temperature = slider(GenerationParams, "temperature", 0.05, value=0.0, label="Temperature")
            top_p = slider(GenerationParams, "top_p", 0.05, label="Top-p")
            max_new = slider(GenerationParams, "max_new_tokens", 1, value=256, maximum=1024,
                             label="Max new tokens")

    with gr.Tab("Chat"):
        history = gr.State([])
        chatbot = gr.Chatbot(label="Conversation", height=380, elem_id="chatbot", editable="user")
        with gr.Row():
            message = gr.Textbox(label="Message", placeholder="Ask something and press Enter", scale=5,
                                 elem_id="chat-input")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
            clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
        stats = gr.Markdown("", elem_id="chat-stats")
        gr.Markdown("Under the last answer: ↻ answers again, ↶ takes your message back into the box. The pencil on "
                    "a message of yours edits it; the conversation goes on from there.", elem_classes=["hint"])
        current = gr.State(None)  # the saved conversation on screen: saving again updates it
        with gr.Accordion("Saved conversations", open=False, elem_id="chat-saved-panel"):
            with gr.Row():
                saved = gr.Dropdown(label="Saved conversation", choices=[], value=None, scale=3,
                                    elem_id="chat-saved", info="Stored in the workspace: they outlive a restart.")
                title = gr.Textbox(label="Title (optional)", scale=2, placeholder="default: the first question")
            with gr.Row():
                save = gr.Button("Save this conversation", elem_id="chat-save")
                reopen = gr.Button("Open", elem_id="chat-open")
                export = gr.Button("Export as JSON")
                forget = gr.Button("Delete", variant="stop")
            exported = gr.File(label="Exported conversation", visible=False, interactive=False)
            saved_note = gr.Markdown("")

    with gr.Tab("Side by side"):
        with gr.Row():
            model_b = gr.Dropdown(label="Second model", choices=[], value=None, info="Compared with the model above.")
        prompt2 = gr.Textbox(label="Prompt sent to both models", lines=2, elem_id="side-prompt")
        with gr.Row():
            send2 = gr.Button("Send to both", variant="primary", elem_id="side-send")
            stop2 = gr.Button("Stop", variant="stop")
        with gr.Row():
            with gr.Column():
                out_a = gr.Markdown(label="Model A", elem_id="side-a", container=True)
                stats_a = gr.Markdown("", elem_id="side-stats-a")
            with gr.Column():
                out_b = gr.Markdown(label="Model B", elem_id="side-b", container=True)
                stats_b = gr.Markdown("", elem_id="side-stats-b")

    def answer(model_id, messages, system_, temp, top_p_, max_new_, request):
        """Stream the model's reply to `messages` (ending with the user's turn): (chat, history, stats) updates."""
        if not model_id:
            raise gr.Error("Pick a model first (the list fills once a model is ready).")
        p = params(system_, temp, top_p_, max_new_)
        stop_event = session_stop(request)
        shown = messages + [{"role": "assistant", "content": ""}]
        yield shown, gr.skip(), "generating…"
        last = None
        for last in engine.chat(model_id, messages, p, stop_event):
            shown[-1] = {"role": "assistant", "content": last.text}
            yield shown, gr.skip(), "generating…"
        new_history = messages + [{"role": "assistant", "content": last.text if last else ""}]
        yield new_history, new_history, _speed(last)

    @ui_errors
    def respond(model_id, text, past, system_, temp, top_p_, max_new_, request: gr.Request):
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.")
        for shown, kept, note in answer(model_id, past + [{"role": "user", "content": text}], system_, temp,
                                        top_p_, max_new_, request):
            yield shown, kept, "", note

    def upto_user(past, index) -> list[dict]:
        """The conversation up to and including the user message at `index` (what a regenerate or edit answers)."""
        i = index[0] if isinstance(index, (list, tuple)) else int(index)
        while i >= 0 and past[i]["role"] != "user":
            i -= 1
        if i < 0:
            raise gr.Error("There is no message of yours to answer again.")
        return [dict(m) for m in past[:i + 1]]

    @ui_errors
    def regenerate(model_id, past, system_, temp, top_p_, max_new_, evt: gr.RetryData, request: gr.Request):
        yield from answer(model_id, upto_user(past, evt.index), system_, temp, top_p_, max_new_, request)

    @ui_errors
    def edited(model_id, past, system_, temp, top_p_, max_new_, evt: gr.EditData, request: gr.Request):
        messages = upto_user(past, evt.index)
        text = evt.value if isinstance(evt.value, str) else str(evt.value)
        if not text.strip():
            raise gr.Error("An edited message cannot be empty.")
        messages[-1]["content"] = text.strip()
        yield from answer(model_id, messages, system_, temp, top_p_, max_new_, request)

    @ui_errors
    def take_back(past, evt: gr.UndoData):
        """↶: the last user message goes back into the box (to edit and send again), its answer is dropped."""
        messages = upto_user(past, evt.index)
        return messages[:-1], messages[:-1], messages[-1]["content"], ""

    def apply_preset(name):
        for preset_name, system_, temp, top_p_ in PRESETS:
            if preset_name == name:
                return system_, temp, top_p_
        return gr.skip(), gr.skip(), gr.skip()

    def do_stop(request: gr.Request):
        event = stop_events.get(request.session_hash)
        if event is not None:
            event.set()

    chat_inputs = [model, message, history, system, temperature, top_p, max_new]
    chat_outputs = [chatbot, history, message, stats]
    # the pending/progress overlay goes on the conversation only (on the speed line it hid the last figures)
    send.click(respond, chat_inputs, chat_outputs, concurrency_limit=4, concurrency_id="chat",
               show_progress_on=[chatbot])
    message.submit(respond, chat_inputs, chat_outputs, concurrency_limit=4, concurrency_id="chat",
                   show_progress_on=[chatbot])
    stop.click(do_stop, None, None, queue=False)
    again_inputs = [model, history, system, temperature, top_p, max_new]
    chatbot.retry(regenerate, again_inputs, [chatbot, history, stats], concurrency_limit=4, concurrency_id="chat",
                  show_progress_on=[chatbot])
    chatbot.edit(edited, again_inputs, [chatbot, history, stats], concurrency_limit=4, concurrency_id="chat",
                 show_progress_on=[chatbot])
    chatbot.undo(take_back, [history], [chatbot, history, message, stats])
    preset.change(apply_preset, [preset], [system, temperature, top_p])
    clear.click(lambda: ([], [], "", None), None, [chatbot, history, stats, current])
    chatbot.clear(lambda: ([], "", None), None, [history, stats, current])  # the conversation's own 🗑

    def saved_choices():
        return [(f"{c.title} · {c.model_id} · {c.updated_at[:16].replace('T', ' ')}", c.id)
                for c in engine.conversations.list()]

    @ui_errors
    def do_save(past, model_id, title_, conversation_id):
        cid = engine.conversations.save(past, model_id or "", title_ or "", conversation_id)
        return cid, gr.update(choices=saved_choices(), value=cid), f"Saved as conversation {cid}."

    @ui_errors
    def do_open(conversation_id):
        if not conversation_id:
            raise gr.Error("Pick a saved conversation to open.")
        c = engine.conversations.get(int(conversation_id))
        model_update = gr.update(value=c.model_id) if c.model_id in chat_choices(engine) else gr.skip()
        return c.messages, c.messages, c.id, model_update, f"Opened **{c.title}** ({len(c.messages)} messages)."

    @ui_errors
    def do_export(conversation_id):
        if not conversation_id:
            raise gr.Error("Pick a saved conversation to export.")
        path = engine.settings.cache_dir / "conversations" / f"conversation-{int(conversation_id)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(engine.conversations.export_json(int(conversation_id)), encoding="utf-8")
        return gr.update(value=str(path), visible=True)

    @ui_errors
    def do_forget(conversation_id, on_screen):
        if not conversation_id:
            raise gr.Error("Pick a saved conversation to delete.")
        engine.conversations.delete(int(conversation_id))
        return (gr.update(choices=saved_choices(), value=None), None if on_screen == conversation_id else on_screen,
                f"Deleted conversation {conversation_id}.")

    save.click(do_save, [history, model, title, current], [current, saved, saved_note])
    reopen.click(do_open, [saved], [chatbot, history, current, model, saved_note])
    export.click(do_export, [saved], [exported])
    forget.click(do_forget, [saved, current], [saved, current, saved_note])

    @ui_errors
    def respond_both(model_a, model_b_, text, system_, temp, top_p_, max_new_, request: gr.Request):
        if not model_a or not model_b_:
            raise gr.Error("Pick two models: the one at the top and the second one here.")
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a prompt first.")
        p = params(system_, temp, top_p_, max_new_)
        stop_event = session_stop(request)
        updates: queue.Queue = queue.Queue()
        latest = {0: None, 1: None}
        names = (model_a, model_b_)
        errors: list[BaseException] = []

        def work(side: int, model_id: str):
            try:
                for chunk in engine.chat(model_id, [{"role": "user", "content": text}], p, stop_event):
                    updates.put((side, chunk))
            except BaseException as exc:  # noqa: BLE001 - shown to the user below
                errors.append(exc)
            finally:
                updates.put((side, None))

        threads = [threading.Thread(target=work, args=(i, m), daemon=True) for i, m in enumerate(names)]
        for t in threads:
            t.start()
        finished = 0
        while finished < 2:
            side, chunk = updates.get()
            if chunk is None:
                finished += 1
            else:
                latest[side] = chunk
            if errors:
                stop_event.set()
                raise errors[0]
            yield (*(f"**{name}**\n\n{c.text if c else '…'}" for name, c in zip(names, latest.values())),
                   *(_speed(c) for c in latest.values()))
        for t in threads:
            t.join()

    send2.click(respond_both, [model, model_b, prompt2, system, temperature, top_p, max_new],
                [out_a, out_b, stats_a, stats_b], concurrency_limit=2, concurrency_id="chat-side")
    stop2.click(do_stop, None, None, queue=False)

    def refresh_choices(current_a, current_b):
        choices = chat_choices(engine)
        default = DEFAULT_MODEL_ID if DEFAULT_MODEL_ID in choices else (choices[0] if choices else None)
        a = current_a if current_a in choices else default
        b = current_b if current_b in choices else a
        return gr.update(choices=choices, value=a), gr.update(choices=choices, value=b)

    refresh.click(refresh_choices, [model, model_b], [model, model_b])

    def refresh_all(current_a, current_b, picked):
        choices = saved_choices()
        keep = picked if picked in [v for _, v in choices] else None
        return (*refresh_choices(current_a, current_b), gr.update(choices=choices, value=keep))

    return {"refresh": (refresh_all, [model, model_b, saved], [model, model_b, saved])}

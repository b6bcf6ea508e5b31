"""The engine job behind an operator: modal (progress, Esc cancels) or synchronous (EXEC_DEFAULT, headless).

`EngineModal` is shared by capture and re-tailor: `prepare` -> the job's args, the engine job polled from a
window timer (`invoke` / `modal`), `finish` applies the result; `execute` runs the same steps synchronously.
One engine job runs at a time.
"""

from __future__ import annotations

from . import capture
from .io.engine_client import PROTOCOL_VERSION, EngineFailure
from .io.results import ResultFileError
from .preferences import engine_config


class EngineModal:
    """Mixin of the operators that run an engine job: `prepare(context) -> args` and `finish(context,
    result) -> message` are theirs; `cmd` names the protocol command."""

    _running = False
    cmd = ""

    def prepare(self, context) -> dict:
        raise NotImplementedError

    def finish(self, context, result: dict) -> str:
        raise NotImplementedError

    # -- shared
    def _fail(self, context, message: str):
        ht = context.scene.handtailor
        ht.status = message[:500]
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def execute(self, context):
        if EngineModal._running:
            return self._fail(context, "HandTailor: another engine job is running")
        config = engine_config(context)
        ht = context.scene.handtailor
        try:
            args = self.prepare(context)
            client = capture.start_engine(config)
            try:
                res = capture.run_job(client, self.cmd, args, config)
            finally:
                client.close()
            message = self.finish(context, res)
        except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
            return self._fail(context, f"HandTailor {self.cmd} failed: {exc}")
        ht.status = message
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def invoke(self, context, event):
        if EngineModal._running:
            return self._fail(context, "HandTailor: another engine job is running")
        self.config = engine_config(context)
        try:
            self.args = self.prepare(context)
            self.client = capture.start_engine(self.config)
        except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
            return self._fail(context, f"HandTailor {self.cmd} failed: {exc}")
        self.job = self.client.request("hello", {}, hang_timeout=self.config.hello_timeout)
        self.phase = "hello"
        EngineModal._running = True
        ht = context.scene.handtailor
        ht.running, ht.progress, ht.status = True, 0.0, "Starting the engine..."
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 1000)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _cleanup(self, context, kill=False):
        wm = context.window_manager
        if getattr(self, "_timer", None) is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        ht = context.scene.handtailor
        ht.running = False
        EngineModal._running = False
        if kill:
            self.client.kill()
        else:
            self.client.close(timeout=2.0)
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()

    def modal(self, context, event):
        ht = context.scene.handtailor
        if event.type == "ESC":
            self.job.cancel(grace=1.0)
            self._cleanup(context, kill=True)
            ht.status = f"{self.cmd} cancelled; the scene is unchanged"
            self.report({"WARNING"}, ht.status)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            res = self.job.poll()
            if res is not None and self.phase == "hello":
                if res.get("protocol") != PROTOCOL_VERSION:
                    raise EngineFailure("protocol_error", f"the engine speaks protocol {res.get('protocol')}, "
                                                          f"the add-on {PROTOCOL_VERSION}")
                self.client.hello = res
                self.job = self.client.request(self.cmd, self.args, hang_timeout=self.config.hang_timeout)
                self.phase = "work"
                res = None
            if res is not None:
                self._cleanup(context)
                message = self.finish(context, res)
                ht.status = message
                self.report({"INFO"}, message)
                return {"FINISHED"}
        except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
            self._cleanup(context, kill=True)
            return self._fail(context, f"HandTailor {self.cmd} failed: {exc}")
        ht.progress = self.job.fraction
        text = f"HandTailor {self.cmd}: {self.job.message or 'working'} ({self.job.done}/{self.job.total})"
        ht.status = text
        context.window_manager.progress_update(int(1000 * self.job.fraction))
        if context.workspace is not None:
            context.workspace.status_text_set(text + "  -  Esc cancels")
        for area in context.screen.areas if context.screen else ():
            if area.type in ("CLIP_EDITOR", "VIEW_3D"):
                area.tag_redraw()
        return {"PASS_THROUGH"}

"""The Workspace > Scripts > Edit > "TTT Generate" script (also runnable outside Resolve Studio).

In Resolve: `resolve`, `fu` and `bmd` are globals of the script; a fu.UIManager window (server, token,
prompt, "fill empty gaps", retime and fit choices, the colour space shots arrive in) runs in bmd.UIDispatcher's loop, and a UIManager Timer pumps the ShotJob on
that same (main) thread: progress lands in the window, finished shots are imported and placed.
Modes: "shots" (the timeline's gaps and 'TTT:' markers) or "element" (generated inside a matte over the
plate clip under the playhead: the plate is that clip's EXR frames, the matte its alpha or a folder of
single-channel EXRs, one per frame; placed on a track above it). "Draft first" asks for a preview job:
its draft lands at once, marked, and the final replaces it in place.
Outside: `python "TTT Generate.py" --server HOST:PORT --token T --no-ui` connects with
DaVinciResolveScript.scriptapp("Resolve") and pumps the job on the main thread until it ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

from host_plugin.core.adapters import NONE_CHOICE, choice_from_panel, parse_choice, server_adapter_names
from host_plugin.core.delivery import FIT_METHODS, RETIME_METHODS
from host_plugin.core.errors import HostPluginError
from host_plugin.core.shot_job import (
    ApprovalCheck,
    DeliverySettings,
    GenerationSettings,
    Plates,
    ServerSettings,
    ShotJob,
    add_delivery_arguments,
    delivery_settings_from,
)
from host_plugin.hosts.resolve import ResolveHost

log = logging.getLogger(__name__)

SERVER_ENV = "TTT_STUDIO_SERVER"
TOKEN_ENV = "TTT_STUDIO_TOKEN"
PUMP_MS = 50
MODES = ("shots", "element")
MATTE_SOURCES = ("plate alpha", "matte folder")
DEFAULT_STRENGTH = 0.6  # an element's share of the denoising redone, as the Nuke and Blender panels offer


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="TTT Generate", description="Generate shots for the current Resolve timeline"
    )
    p.add_argument("--server", default=os.environ.get(SERVER_ENV, "127.0.0.1:50051"))
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV))
    p.add_argument("--tls-root-cert", default=None)
    p.add_argument("--prompt", default="", help="prompt for gaps / markers that carry none")
    p.add_argument("--fill-gaps", action="store_true", help="also fill plain gaps on the video tracks")
    p.add_argument(
        "--output", default=None, help="folder for the generated EXRs (default: ~/ttt_studio_frames)"
    )
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--height", type=int, default=0)
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--takes", type=int, default=1, help="takes per shot: all in a bin, the first in a take selector"
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=MODES[0],
        help="shots: gaps and markers; element: over the plate clip under the playhead",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help="element: the share of the denoising redone, in (0, 1]",
    )
    p.add_argument(
        "--matte-dir",
        default="",
        help="element: a folder of single-channel EXR mattes, one per plate frame (default: the plate's alpha)",
    )
    p.add_argument(
        "--draft-first",
        action="store_true",
        help="a preview job: its draft is placed at once, then replaced by the final",
    )
    p.add_argument(
        "--draft-steps",
        type=int,
        default=0,
        help="with --draft-first: the draft's steps (default: the server's)",
    )
    add_delivery_arguments(p, "the timeline's", "the project's working space")
    p.add_argument(
        "--adapter",
        type=parse_choice,
        action="append",
        default=[],
        metavar="NAME[:SCALE]",
        help="a LoRA adapter of the server at SCALE (default 1.0); repeatable",
    )
    p.add_argument("--no-ui", action="store_true", help="no window: run and pump on this thread")
    p.add_argument(
        "--timeout", type=float, default=24 * 3600.0, help="headless: give up after this many seconds"
    )
    return p.parse_args(argv)


def connect_resolve() -> Any:
    """The running Resolve through DaVinciResolveScript (external scripting; Resolve Studio)."""
    try:
        import DaVinciResolveScript as dvr
    except ImportError as exc:
        raise HostPluginError(
            "DaVinciResolveScript is not importable: add $RESOLVE_SCRIPT_API/Modules to PYTHONPATH "
            "(Linux: /opt/resolve/Developer/Scripting/Modules) and set RESOLVE_SCRIPT_LIB"
        ) from exc
    resolve = dvr.scriptapp("Resolve")
    if resolve is None:
        raise HostPluginError("DaVinciResolveScript.scriptapp('Resolve') found no running Resolve (Studio)")
    return resolve


def build_job(
    host: ResolveHost, args: argparse.Namespace, prompt: str, fill_gaps: bool, interceptors: Any = ()
) -> ShotJob:
    """Main thread: find the requests (shots: OTIO export + markers; element: the plate clip under the
    playhead, its matte), then a ShotJob for them."""
    plates: Dict[str, Plates] = {}
    if args.mode == "element":
        request, paths, mattes = host.element_request(prompt, args.matte_dir)
        plates[request.id] = Plates(tuple(paths), "element", args.strength, mattes=tuple(mattes))
        requests = [request]
    else:
        requests = host.find_requests(include_plain_gaps=fill_gaps, prompt=prompt or None)
    settings = GenerationSettings(
        output_dir=args.output or os.path.join(os.path.expanduser("~"), "ttt_studio_frames"),
        height=args.height,
        width=args.width,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        delivery=delivery_settings_from(args),
        takes=args.takes,
        adapters=tuple(args.adapter),
        priority="preview" if args.draft_first else "final",
        draft_steps=args.draft_steps,
    )
    server = ServerSettings(args.server, token=args.token, root_cert=args.tls_root_cert)
    return ShotJob(
        host,
        requests,
        settings,
        client_factory=lambda: server.client(interceptors=interceptors),
        plates=plates,
    )


def run_headless(resolve: Any, args: argparse.Namespace, interceptors: Any = ()) -> int:
    host = ResolveHost(resolve)
    host.on_status = lambda text: print(text, flush=True)
    try:
        job = build_job(host, args, args.prompt, args.fill_gaps, interceptors).start()
    except (HostPluginError, ValueError) as exc:
        print(f"TTT Generate: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while job.pump():
        host.run_pending()
        if time.monotonic() > deadline:
            job.cancel()
            print("TTT Generate: timed out; job cancelled", file=sys.stderr)
        time.sleep(PUMP_MS / 1000.0)
    host.run_pending()
    print(f"TTT Generate: {job.state}: {job.message}")
    return 0 if job.state == "done" else 1


class GenerateWindow:
    """The fu.UIManager window; all handlers run on the UIDispatcher loop's (main) thread."""

    def __init__(
        self, resolve: Any, fu: Any, bmd: Any, args: argparse.Namespace, interceptors: Any = ()
    ) -> None:
        self.resolve, self.args, self.interceptors = resolve, args, interceptors
        self.job: Optional[ShotJob] = None
        self.host: Optional[ResolveHost] = None
        self.check: Optional[ApprovalCheck] = None
        ui = fu.UIManager
        self.disp = bmd.UIDispatcher(ui)
        self.win = self.disp.AddWindow(
            {"ID": "TTTGenerate", "WindowTitle": "TTT Generate", "Geometry": [200, 200, 480, 260]},
            ui.VGroup(
                [
                    ui.HGroup(
                        [ui.Label({"Text": "Server"}), ui.LineEdit({"ID": "Server", "Text": args.server})]
                    ),
                    ui.HGroup(
                        [
                            ui.Label({"Text": "Token"}),
                            ui.LineEdit({"ID": "Token", "Text": args.token or "", "EchoMode": "Password"}),
                        ]
                    ),
                    ui.HGroup(
                        [ui.Label({"Text": "Prompt"}), ui.LineEdit({"ID": "Prompt", "Text": args.prompt})]
                    ),
                    ui.HGroup(
                        [
                            ui.Label({"Text": "Retime"}),
                            ui.ComboBox({"ID": "Retime"}),
                            ui.Label({"Text": "Fit"}),
                            ui.ComboBox({"ID": "Fit"}),
                        ]
                    ),
                    ui.Label({"ID": "Colour", "Text": ""}),
                    ui.HGroup(
                        [
                            ui.Label({"Text": "Adapter"}),
                            ui.ComboBox({"ID": "Adapter"}),
                            ui.Button({"ID": "ListAdapters", "Text": "List adapters"}),
                            ui.Label({"Text": "Strength"}),
                            ui.LineEdit({"ID": "AdapterStrength", "Text": "1.0"}),
                        ]
                    ),
                    ui.HGroup(
                        [
                            ui.Label({"Text": "Mode"}),
                            ui.ComboBox({"ID": "Mode"}),
                            ui.Label({"Text": "Strength"}),
                            ui.LineEdit({"ID": "Strength", "Text": str(args.strength)}),
                        ]
                    ),
                    ui.HGroup(
                        [
                            ui.Label({"Text": "Matte"}),
                            ui.ComboBox({"ID": "MatteSource"}),
                            ui.LineEdit({"ID": "MatteDir", "Text": args.matte_dir}),
                        ]
                    ),
                    ui.CheckBox({"ID": "DraftFirst", "Text": "Draft first", "Checked": args.draft_first}),
                    ui.CheckBox(
                        {
                            "ID": "FillGaps",
                            "Text": "Fill empty gaps on the video tracks",
                            "Checked": args.fill_gaps,
                        }
                    ),
                    ui.Label(
                        {
                            "ID": "Status",
                            "Text": "Gaps and 'TTT:' markers of the current timeline become shots.",
                        }
                    ),
                    ui.HGroup(
                        [
                            ui.Button({"ID": "Generate", "Text": "Generate"}),
                            ui.Button({"ID": "Cancel", "Text": "Cancel"}),
                            ui.Button({"ID": "CheckTakes", "Text": "Check approved takes"}),
                            ui.Button({"ID": "Close", "Text": "Close"}),
                        ]
                    ),
                ]
            ),
        )
        self.items = self.win.GetItems()
        for combo, values, chosen in (
            ("Retime", RETIME_METHODS, args.retime),
            ("Fit", FIT_METHODS, args.fit),
            ("Mode", MODES, args.mode),
            ("MatteSource", MATTE_SOURCES, MATTE_SOURCES[1] if args.matte_dir else MATTE_SOURCES[0]),
        ):
            for value in values:
                self.items[combo].AddItem(value)
            self.items[combo].CurrentText = chosen
        self.items["Colour"].Text = self.colour_line()
        self.show_adapters([NONE_CHOICE] + [a.name for a in args.adapter])
        if args.adapter:  # the window offers one adapter: the first of the command line's
            self.items["Adapter"].CurrentText = args.adapter[0].name
            self.items["AdapterStrength"].Text = str(args.adapter[0].scale)
        self.timer = ui.Timer({"ID": "TTTPump", "Interval": PUMP_MS})
        self.win.On.Generate.Clicked = self.on_generate
        self.win.On.Cancel.Clicked = self.on_cancel
        self.win.On.CheckTakes.Clicked = self.on_check_takes
        self.win.On.ListAdapters.Clicked = self.on_list_adapters
        self.win.On.Close.Clicked = self.on_close
        self.win.On.TTTGenerate.Close = self.on_close
        self.disp.On.Timeout = self.on_timer

    def status(self, text: str) -> None:
        self.items["Status"].Text = text

    def colour_line(self) -> str:
        """What colour space shots arrive in: --colorspace, else the project's working space."""
        if self.args.colorspace:
            return f"Colour space: {DeliverySettings(colorspace=self.args.colorspace).colorspace}"
        try:
            working = ResolveHost(self.resolve).working_colorspace()
        except HostPluginError as exc:
            return f"Colour space: unknown ({exc})"
        return f"Colour space: {working} (the project's working space)"

    def show_adapters(self, names: List[str]) -> None:
        combo = self.items["Adapter"]
        chosen = combo.CurrentText
        combo.Clear()
        for name in names:
            combo.AddItem(name)
        combo.CurrentText = chosen if chosen in names else names[0]

    def on_list_adapters(self, ev: Any) -> None:
        """Ask the server which adapters this token may use, into the Adapter list."""
        try:
            server = ServerSettings(
                self.items["Server"].Text,
                token=self.items["Token"].Text or None,
                root_cert=self.args.tls_root_cert,
            )
            names = server_adapter_names(server)
        except (HostPluginError, ValueError) as exc:
            self.status(f"Error listing adapters: {exc}")
            return
        self.show_adapters(list(names))
        self.status(f"{len(names) - 1} adapter(s) on the server")

    def on_generate(self, ev: Any) -> None:
        if self.job is not None and not self.job.finished:
            self.status("a job is already running")
            return
        self.args.server = self.items["Server"].Text
        self.args.token = self.items["Token"].Text or None
        self.args.retime = self.items["Retime"].CurrentText
        self.args.fit = self.items["Fit"].CurrentText
        self.args.mode = self.items["Mode"].CurrentText
        self.args.draft_first = bool(self.items["DraftFirst"].Checked)
        matte_folder = self.items["MatteSource"].CurrentText == MATTE_SOURCES[1]
        self.args.matte_dir = self.items["MatteDir"].Text.strip() if matte_folder else ""
        if matte_folder and not self.args.matte_dir:
            self.status("Error: the matte source is a matte folder: type the folder of matte EXRs")
            return
        try:
            strength = float(self.items["AdapterStrength"].Text)
            self.args.strength = float(self.items["Strength"].Text)
        except ValueError:
            self.status(
                f"Error: strength {self.items['Strength'].Text!r} or adapter strength "
                f"{self.items['AdapterStrength'].Text!r} is not a number"
            )
            return
        try:
            self.args.adapter = list(choice_from_panel(self.items["Adapter"].CurrentText, strength))
            self.host = ResolveHost(self.resolve)
            self.host.on_status = self.status
            self.job = build_job(
                self.host,
                self.args,
                self.items["Prompt"].Text,
                bool(self.items["FillGaps"].Checked),
                self.interceptors,
            )
        except (HostPluginError, ValueError) as exc:
            self.status(f"Error: {exc}")
            return
        self.job.start()
        self.status(f"generating {len(self.job.requests)} shot(s)...")
        self.timer.Start()

    def on_cancel(self, ev: Any) -> None:
        if self.host is not None and self.job is not None and not self.job.finished:
            self.host.cancel_requested = True
            self.status("cancelling...")

    def on_check_takes(self, ev: Any) -> None:
        """Ask the server which takes were approved (a worker thread) and select them (the timer)."""
        if self.job is None or not self.job.finished or self.host is None:
            self.status("check approved takes after a job with takes has finished")
            return
        if not any(placed.result.takes for placed in self.job.placed):
            self.status("the last job placed one take per shot: nothing to switch")
            return
        server = ServerSettings(self.args.server, token=self.args.token, root_cert=self.args.tls_root_cert)
        self.check = ApprovalCheck(
            self.host, self.job.placed, lambda: server.client(interceptors=self.interceptors)
        ).start()
        self.status("checking approved takes...")
        self.timer.Start()

    def on_timer(self, ev: Any) -> None:
        if self.check is not None:
            if not self.check.pump():
                switched = self.check.switched
                self.status(f"approved takes shown: {switched}" if switched else "no take switched")
                self.check = None
                self.timer.Stop()
            return
        if self.job is None:
            return
        running = self.job.pump()
        if self.host is not None:
            self.host.run_pending()
        if not running:
            self.timer.Stop()
            self.status(f"{self.job.state}: {self.job.message}")

    def on_close(self, ev: Any) -> None:
        if self.job is not None and not self.job.finished:
            self.job.cancel()
        self.timer.Stop()
        self.disp.ExitLoop()

    def run(self) -> None:
        self.win.Show()
        self.disp.RunLoop()
        self.win.Hide()


def main(argv: Optional[List[str]] = None, resolve: Any = None, fu: Any = None, bmd: Any = None) -> int:
    """Entry point of the launcher: window when Resolve gave us fu and bmd, else headless."""
    args = parse_args(list(argv or []))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        resolve = resolve or connect_resolve()
    except HostPluginError as exc:
        print(f"TTT Generate: {exc}", file=sys.stderr)
        return 2
    if not args.no_ui:
        fu = fu or resolve.Fusion()
        if bmd is None:
            try:
                import DaVinciResolveScript as bmd
            except ImportError:
                bmd = None
    if args.no_ui or fu is None or bmd is None:
        return run_headless(resolve, args)
    GenerateWindow(resolve, fu, bmd, args).run()
    return 0

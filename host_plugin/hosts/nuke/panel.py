"""The "TTT Generate" panel (nukescripts.PythonPanel): server, token, mode, prompts per segment, the
element's matte, output, takes, the priority (preview: a draft placed first, then replaced by the
final), how the shot is delivered: retime (flow / blend / hold), fit (fit / fill / distort) and the colour
space (the root's working space first; the name Nuke gives it is shown beside the interop id), and an
adapter of the server (filled by the "list adapters" button) with its strength."""

from __future__ import annotations

import os
from typing import Any

import nuke
import nukescripts

from host_plugin.core.adapters import NONE_CHOICE, choice_from_panel, server_adapter_names
from host_plugin.core.delivery import FIT_METHODS, RETIME_METHODS
from host_plugin.core.errors import HostPluginError
from host_plugin.core.shot_job import DELIVERY_DEFAULTS, DeliverySettings, GenerationSettings, ServerSettings
from host_plugin.hosts import colour
from host_plugin.hosts.nuke import MODES, GenerateOptions, colour_settings

SERVER_ENV = "TTT_STUDIO_SERVER"
TOKEN_ENV = "TTT_STUDIO_TOKEN"
SEGMENTS = 4
PRIORITIES = ("final", "preview")  # the panel's first choice is the default


def first(default: str, values: tuple) -> list:
    """`values` with `default` first (an Enumeration_Knob starts on its first value)."""
    return [default] + [v for v in values if v != default]


class GeneratePanel(nukescripts.PythonPanel):
    def __init__(self, read: Any) -> None:
        super().__init__("TTT Generate", "uk.ttt_studio.generate")
        self.read = read
        self.server = nuke.String_Knob("server", "server", os.environ.get(SERVER_ENV, "127.0.0.1:50051"))
        self.token = nuke.Password_Knob("token", "token")
        self.token.setValue(os.environ.get(TOKEN_ENV, ""))
        self.root_cert = nuke.File_Knob("root_cert", "TLS CA (PEM)")
        self.mode = nuke.Enumeration_Knob("mode", "mode", list(MODES))
        self.prompts = [nuke.String_Knob(f"segment{i}", f"segment {i + 1}") for i in range(SEGMENTS)]
        self.duration = nuke.Int_Knob("duration", "frames to add (continue)")
        self.strength = nuke.Double_Knob("strength", "restyle strength")
        self.strength.setValue(0.6)
        plate_dir = os.path.dirname(read["file"].value()) or os.getcwd()
        self.output = nuke.File_Knob("output", "output folder")
        self.output.setValue(os.path.join(plate_dir, "ttt_generated"))
        self.steps = nuke.Int_Knob("steps", "steps (0: server default)")
        self.takes = nuke.Int_Knob("takes", "takes (a Switch over them)")
        self.takes.setValue(1)
        self.priority = nuke.Enumeration_Knob(
            "priority", "priority (preview: a draft first)", list(PRIORITIES)
        )
        self.matte = nuke.File_Knob("matte", "matte (element; empty: the plate's alpha)")
        self.retime = nuke.Enumeration_Knob(
            "retime", "retime", first(DELIVERY_DEFAULTS["retime"], RETIME_METHODS)
        )
        self.fit = nuke.Enumeration_Knob("fit", "fit", first(DELIVERY_DEFAULTS["fit"], FIT_METHODS))
        config, working = colour_settings()
        working_id = colour.nuke_working_interop(config, working)
        name = colour.nuke_colorspace_name(working_id, config, working)
        shown = name if working in ("", name) else f"{working} = {name}"
        self.colorspace = nuke.Enumeration_Knob(
            "colorspace", f"colour space (working: {shown})", first(working_id, colour.INTEROP_IDS)
        )
        self.adapter = nuke.Enumeration_Knob("adapter", "adapter", [NONE_CHOICE])
        self.list_adapters = nuke.PyScript_Knob("list_adapters", "list adapters")
        self.adapter_strength = nuke.Double_Knob("adapter_strength", "adapter strength")
        self.adapter_strength.setValue(1.0)
        for knob in [
            self.server,
            self.token,
            self.root_cert,
            self.mode,
            *self.prompts,
            self.duration,
            self.strength,
            self.matte,
            self.output,
            self.steps,
            self.takes,
            self.priority,
            self.retime,
            self.fit,
            self.colorspace,
            self.adapter,
            self.list_adapters,
            self.adapter_strength,
        ]:
            self.addKnob(knob)

    def server_settings(self) -> ServerSettings:
        return ServerSettings(
            self.server.value(), token=self.token.value() or None, root_cert=self.root_cert.value() or None
        )

    def knobChanged(self, knob: Any) -> None:  # noqa: N802 - nukescripts.PythonPanel's callback name
        """The "list adapters" button: ask the server for the adapters this token may use."""
        if knob is not self.list_adapters:
            return
        try:
            names = server_adapter_names(self.server_settings())
        except (HostPluginError, ValueError) as exc:
            nuke.message(f"TTT: cannot list the server's adapters: {exc}")
            return
        self.adapter.setValues(list(names))

    def options(self) -> GenerateOptions:
        delivery = DeliverySettings(
            fit=self.fit.value(), retime=self.retime.value(), colorspace=self.colorspace.value()
        )
        return GenerateOptions(
            server=self.server_settings(),
            generation=GenerationSettings(
                output_dir=self.output.value(),
                steps=int(self.steps.value()),
                delivery=delivery,
                takes=int(self.takes.value()),
                priority=self.priority.value(),
                adapters=choice_from_panel(self.adapter.value(), float(self.adapter_strength.value())),
            ),
            mode=self.mode.value(),
            prompts=[k.value() for k in self.prompts],
            duration=int(self.duration.value()),
            strength=float(self.strength.value()),
            matte=self.matte.value() if self.mode.value() == "element" else "",
        )

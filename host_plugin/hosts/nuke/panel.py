"""The "TTT Generate" panel (nukescripts.PythonPanel): server, token, mode, prompts per segment, output."""

from __future__ import annotations

import os
from typing import Any

import nuke
import nukescripts

from host_plugin.core.shot_job import GenerationSettings, ServerSettings
from host_plugin.hosts.nuke import MODES, GenerateOptions

SERVER_ENV = "TTT_STUDIO_SERVER"
TOKEN_ENV = "TTT_STUDIO_TOKEN"
SEGMENTS = 4


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
        for knob in [
            self.server,
            self.token,
            self.root_cert,
            self.mode,
            *self.prompts,
            self.duration,
            self.output,
            self.steps,
        ]:
            self.addKnob(knob)

    def options(self) -> GenerateOptions:
        return GenerateOptions(
            server=ServerSettings(
                self.server.value(),
                token=self.token.value() or None,
                root_cert=self.root_cert.value() or None,
            ),
            generation=GenerationSettings(output_dir=self.output.value(), steps=int(self.steps.value())),
            mode=self.mode.value(),
            prompts=[k.value() for k in self.prompts],
            duration=int(self.duration.value()),
            strength=float(self.strength.value()),
        )

"""The server's adapters in the plugins (issue #24 item 4): the shared core lists them and carries a
(name, strength) choice into the shot request; the Nuke panel (fake nuke: Enumeration_Knob.setValues,
PyScript_Knob, PythonPanel.knobChanged) and the Resolve window (fake UIManager: ComboBox.Clear / AddItem,
a Button's Clicked) offer the list and a strength. A real server with the shipped default model; Blender
is tested with the real bpy in test_hp_blender.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hp_helpers import FAST_DEFAULT, OTHER_TOKEN, TOKEN, job_states, use_fakes

use_fakes()
import DaVinciResolveScript  # noqa: E402 - the fakes, from tests/fakes
import nuke  # noqa: E402
import resolve as fake  # noqa: E402

from host_plugin.core.adapters import (  # noqa: E402
    NONE_CHOICE,
    AdapterChoice,
    adapters_from_metadata,
    check_choices,
    parse_choice,
    server_adapter_names,
)
from host_plugin.core.client import TTTClient  # noqa: E402
from host_plugin.core.errors import RequestError  # noqa: E402
from host_plugin.core.shot_job import ServerSettings  # noqa: E402
from host_plugin.hosts.resolve import script  # noqa: E402


def test_choices_parse_and_are_checked_against_the_server(hp_default_server: Any, hp_adapter: str) -> None:
    assert parse_choice("look") == AdapterChoice("look", 1.0)
    assert parse_choice("look:-0.5") == AdapterChoice("look", -0.5)
    for bad in ("look:strong", "../x", "look:nan"):
        with pytest.raises(ValueError, match="NAME or NAME:SCALE"):
            parse_choice(bad)
    meta = {"adapters": ["a", {"name": "b", "scale": 0.25}]}
    assert adapters_from_metadata(meta, "gap 1") == (AdapterChoice("a"), AdapterChoice("b", 0.25))
    assert adapters_from_metadata({}, "gap 1") == ()
    for bad in ({"adapters": "a"}, {"adapters": [{"nam": "a"}]}, {"adapters": [{"name": "a", "scale": "x"}]}):
        with pytest.raises(RequestError, match=r"gap 1: metadata\['ttt_studio'\]\['adapters'\]"):
            adapters_from_metadata(bad, "gap 1")

    with TTTClient(hp_default_server.address, token=TOKEN) as client:
        info = client.server_info()
    assert hp_adapter in [a.name for a in info.adapters]
    check_choices([AdapterChoice(hp_adapter, 0.5)], info, "shot")
    with pytest.raises(RequestError, match=rf"no adapter 'nosuch' for you; it offers \[.*'{hp_adapter}'"):
        check_choices([AdapterChoice("nosuch")], info, "shot")
    with pytest.raises(RequestError, match="max_adapter_scale"):
        check_choices([AdapterChoice(hp_adapter, info.limits["max_adapter_scale"] + 1)], info, "shot")
    # bob does not see alice's adapter
    assert server_adapter_names(ServerSettings(hp_default_server.address, token=OTHER_TOKEN)) == (
        NONE_CHOICE,
    )


def test_nuke_panel_lists_the_servers_adapters_and_carries_the_choice(
    hp_default_server: Any, hp_adapter: str, tmp_path: Path
) -> None:
    from host_plugin.hosts.nuke.panel import GeneratePanel

    nuke.reset()
    read = nuke.nodes.Read(file=str(tmp_path / "plate.####.exr"), first=1001, last=1012)
    panel = GeneratePanel(read)
    knobs = panel.knobs()
    assert knobs["adapter"].values() == [NONE_CHOICE]
    assert panel.options().generation.adapters == ()
    knobs["server"].setValue(hp_default_server.address)
    knobs["token"].setValue(TOKEN)
    panel.knobChanged(knobs["list_adapters"])  # the button press, as Nuke delivers it to a PythonPanel
    assert knobs["adapter"].values() == [NONE_CHOICE, hp_adapter]
    knobs["adapter"].setValue(hp_adapter)
    knobs["adapter_strength"].setValue(0.7)
    assert panel.options().generation.adapters == (AdapterChoice(hp_adapter, 0.7),)
    knobs["token"].setValue("ttt.nosuch.secret-0123456789abcdef")
    panel.knobChanged(knobs["list_adapters"])
    assert "cannot list the server's adapters" in nuke.MESSAGES[-1]
    assert knobs["adapter"].values() == [NONE_CHOICE, hp_adapter], "a failed listing must not empty the list"


def test_resolve_window_generates_with_the_chosen_adapter(
    hp_default_server: Any, hp_adapter: str, tmp_path: Path
) -> None:
    app = fake.make_resolve(fps="24", start_frame=86400)
    app.manager.project.settings.update({"timelineResolutionWidth": "64", "timelineResolutionHeight": "36"})
    timeline = app.manager.project.timeline
    timeline.add_clip(1, "A", 86400, 48)
    timeline.add_clip(1, "B", 86460, 48)
    args = script.parse_args(
        [
            "--server",
            hp_default_server.address,
            "--token",
            TOKEN,
            "--output",
            str(tmp_path / "out"),
            "--steps",
            str(FAST_DEFAULT["steps"]),
            "--guidance-scale",
            str(FAST_DEFAULT["guidance_scale"]),
            "--fill-gaps",
        ]
    )
    window = script.GenerateWindow(app, app.Fusion(), DaVinciResolveScript, args)
    assert window.items["Adapter"].choices == [NONE_CHOICE]
    window.win.click("ListAdapters")
    assert window.items["Adapter"].choices == [NONE_CHOICE, hp_adapter]
    window.items["Adapter"].CurrentText = hp_adapter
    window.items["AdapterStrength"].Text = "0.4"
    window.items["Prompt"].Text = "A red ball rolls."
    before = {j.job_id for j in job_states(hp_default_server.address)}
    window.win.click("Generate")
    assert window.job is not None, window.items["Status"].Text
    while window.job.pump():
        window.host.run_pending()
    window.host.run_pending()
    assert window.job.state == "done", window.job.message
    (job,) = [j for j in job_states(hp_default_server.address) if j.job_id not in before]
    assert [(name, scale) for name, scale, _ in job.adapters] == [(hp_adapter, pytest.approx(0.4))]
    assert len(job.adapters[0][2]) == 64
    window.items["AdapterStrength"].Text = "strong"
    window.win.click("Generate")
    assert "adapter strength 'strong' is not a number" in window.items["Status"].Text

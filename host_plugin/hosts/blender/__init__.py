"""TTT Studio for Blender's Sequencer (an extension: blender_manifest.toml beside this file).

In the repository this is host_plugin.hosts.blender; installed (`ttt-studio install-plugin blender`)
it is the extension package itself, and host_plugin's core and the protos come from the wheel that
install-plugin builds and lists in the manifest. Only this folder imports bpy.
"""

from __future__ import annotations

from . import ui, vse

__all__ = ["register", "unregister", "ui", "vse"]


def register() -> None:
    ui.register()


def unregister() -> None:
    ui.unregister()

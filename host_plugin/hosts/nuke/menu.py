"""Nuke menu.py of the ttt-studio plugin: adds TTT > Generate... (copied to the plugin folder by
`ttt-studio install-plugin nuke`, whose init.py puts lib/ and site-packages/ on sys.path)."""

from __future__ import annotations

from host_plugin.hosts.nuke import add_menus

add_menus()

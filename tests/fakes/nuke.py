"""A stand-in for Foundry's `nuke` module (and `nukescripts`) for tests outside Nuke.

It follows the documented Python API call for call, for the calls the plugin makes:
  nuke.menu(name).addMenu(name).addCommand(name, command), Menu.findItem(name)
  nuke.nodes.Read(**knobs) / nuke.nodes.Write(**knobs), nuke.selectedNode() (ValueError when none),
  nuke.allNodes(), nuke.delete(node), nuke.root()["fps"], root().firstFrame()/lastFrame()
  Node.Class() / name() / knob(name) / node["knob"] / xpos() / ypos() / setXYpos(x, y) / setInput(i, node)
  / setSelected(bool) / isSelected() / firstFrame() / lastFrame(); Knob.value() / getValue() / setValue(v)
  nuke.execute(node, first, last, incr) (a Write renders real EXRs), nuke.message(text)
  nuke.executeInMainThread(fn, args), nuke.executeInMainThreadWithResult(fn, args)
  nuke.ProgressTask(name).setProgress(int) / setMessage(str) / isCancelled()
  nuke.String_Knob / Password_Knob / File_Knob / Int_Knob / Double_Knob / Enumeration_Knob (name, label[, value|values])
  Enumeration_Knob.setValues(items); nuke.PyScript_Knob(name, label[, command]) (a button: in a PythonPanel,
  pressing it calls the panel's knobChanged(knob))
  nukescripts.PythonPanel(title, id).addKnob(knob) / knobs() / showModalDialog()
Formats and colour (Python Developers Guide "Formats"; Nuke's Project Settings > Color knobs):
  nuke.Format: width() / height() / pixelAspect() / name(); nuke.addFormat("W H [x y r t] PA name")
  (returns the Format), nuke.formats(); Node.format(); nuke.root()["format"].value() -> Format and
  .setValue(format name); root knobs colorManagement ("Nuke" | "OCIO"), OCIO_config, workingSpaceLUT.
  A Read's format is its file's (EXR displayWindow and pixelAspectRatio), as Nuke reads it; its
  `colorspace` knob takes the colour spaces and roles of the root's OCIO config and raises ValueError for
  another name (the fake knows "nuke-default" and the CG / studio configs, whose names it takes from
  OpenColorIO's own built-in configs, which Nuke 14+ ships as its defaults).
Takes and elements (Python Developers Guide "Nodes", "Groups"; Nuke's node reference):
  nuke.nodes.Switch(): knob `which` (the input shown, 0-based); Node.setInput(i, node) / input(i) /
  inputs() (connected inputs); nuke.toNode(name) (None when no node has that name; "Group1.Read1" reaches
  into a group); nuke.nodes.Merge2(operation=...): knob `operation` ("over", ...: Merge2's own list,
  ValueError for another), input 0 = B, input 1 = A, input 2 = mask; Node.setName(name, uncollide=True)
  (a name in use gets a number: TTT, TTT1, ...); nuke.nodes.Group() with
  Group.begin() / end() (nodes made between them belong to the group) and Group.nodes();
  nuke.nodes.Input(name=...) / nuke.nodes.Output() inside a group; the Read knob `raw`.
Like Nuke, the node graph belongs to the main thread: touching a node or knob from another thread
raises (real Nuke may crash), and every call is recorded with its thread in CALLS. Test helpers:
reset(), run_main_loop(until, timeout, tick), MODAL_RESULT, MESSAGES, ProgressTask.cancel_all().
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np

MAIN_THREAD = threading.main_thread()
CALLS: list[tuple[str, str, bool]] = []  # (api, thread name, on the main thread)
MESSAGES: list[str] = []
MODAL_RESULT = True
_ALL: list[Any] = []
_MAIN_QUEUE: queue.Queue[tuple[Callable[..., Any], tuple, dict, dict | None]] = queue.Queue()
_MENUS: dict[str, Any] = {}
_COUNTS: dict[str, int] = {}


def _record(api: str, main_only: bool = False) -> None:
    here = threading.current_thread()
    CALLS.append((api, here.name, here is MAIN_THREAD))
    if main_only and here is not MAIN_THREAD:
        raise RuntimeError(
            f"nuke: {api} called from thread {here.name!r}; node graph calls belong to the main thread"
        )


# ---------------------------------------------------------------------------------------- knobs


class Knob:
    def __init__(self, name: str, label: str = "", value: Any = None) -> None:
        self._name, self._label, self._value = name, label or name, value

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def value(self) -> Any:
        _record(f"Knob.value:{self._name}", main_only=True)
        return self._value

    def getValue(self) -> Any:
        return self.value()

    def setValue(self, value: Any) -> bool:
        _record(f"Knob.setValue:{self._name}", main_only=True)
        self._value = value
        return True


class String_Knob(Knob):
    def __init__(self, name: str, label: str = "", value: str = "") -> None:
        super().__init__(name, label, value)


class Password_Knob(String_Knob):
    pass


class File_Knob(String_Knob):
    pass


class Int_Knob(Knob):
    def __init__(self, name: str, label: str = "", value: int = 0) -> None:
        super().__init__(name, label, value)


class Double_Knob(Knob):
    def __init__(self, name: str, label: str = "", value: float = 0.0) -> None:
        super().__init__(name, label, value)


class Enumeration_Knob(Knob):
    def __init__(self, name: str, label: str, values: list[str]) -> None:
        super().__init__(name, label, values[0] if values else "")
        self._values = list(values)

    def values(self) -> list[str]:
        return list(self._values)

    def setValue(self, value: Any) -> bool:
        if value not in self._values:
            raise ValueError(f"{value!r} is not one of {self._values}")
        return super().setValue(value)

    def setValues(self, items: list[str]) -> None:
        """Replace the menu items (Nuke keeps the value when it is still an item, else takes the first)."""
        _record("Enumeration_Knob.setValues", main_only=True)
        self._values = [str(i) for i in items]
        if self._value not in self._values:
            self._value = self._values[0] if self._values else ""


class PyScript_Knob(Knob):
    """A button; in a PythonPanel, pressing it calls the panel's knobChanged(knob)."""

    def __init__(self, name: str, label: str = "", command: str = "") -> None:
        super().__init__(name, label, command)


# ---------------------------------------------------------------------------------------- formats


class Format:
    def __init__(self, width: int, height: int, pixel_aspect: float = 1.0, name: str = "") -> None:
        self._width, self._height, self._aspect, self._name = (
            int(width),
            int(height),
            float(pixel_aspect),
            name,
        )

    def width(self) -> int:
        return self._width

    def height(self) -> int:
        return self._height

    def pixelAspect(self) -> float:
        return self._aspect

    def name(self) -> str:
        return self._name


_FORMATS: dict[str, Format] = {
    "HD_1080": Format(1920, 1080, 1.0, "HD_1080"),
    "square_2K": Format(2048, 2048, 1.0, "square_2K"),
}


def addFormat(spec: str) -> Format:
    """nuke.addFormat("2048 2048 square 2k") or with a box and pixel aspect: "W H x y r t PA name"."""
    _record("addFormat")
    parts = spec.split()
    numbers = []
    while parts and _is_number(parts[0]):
        numbers.append(float(parts.pop(0)))
    if len(numbers) not in (2, 3, 6, 7):
        raise ValueError(f"bad format {spec!r}")
    aspect = numbers[-1] if len(numbers) in (3, 7) else 1.0
    fmt = Format(int(numbers[0]), int(numbers[1]), aspect, " ".join(parts))
    _FORMATS[fmt.name()] = fmt
    return fmt


def formats() -> list[Format]:
    _record("formats")
    return list(_FORMATS.values())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Format_Knob(Knob):
    """A format knob: value() is a Format; setValue takes a format's name (or a Format)."""

    def setValue(self, value: Any) -> bool:
        if isinstance(value, str):
            if value not in _FORMATS:
                raise ValueError(f"unknown format {value!r}")
            value = _FORMATS[value]
        return super().setValue(value)


# colour spaces of the configs the fake models (Read colorspace values)
OCIO_ROLES = ("scene_linear", "compositing_linear", "rendering", "default", "data")
_NUKE_DEFAULT_SPACES = (
    "linear", "sRGB", "rec709", "Cineon", "Gamma1.8", "Gamma2.2", "Gamma2.4", "Gamma2.6", "Panalog",
    "REDLog", "ViperLog", "AlexaV3LogC", "PLogLin", "SLog", "SLog1", "SLog2", "SLog3", "CLog", "Log3G10",
    "Log3G12", "HybridLogGamma", "Protune", "BT1886", "st2084", "Blackmagic Film Generation 5",
    "ARRILogC4", "raw",
)  # fmt: skip


def colorspaces(config: str) -> tuple[str, ...]:
    """The colour space names (and roles) a Read offers under OCIO config `config`."""
    if config in ("", "nuke-default"):
        return _NUKE_DEFAULT_SPACES
    import PyOpenColorIO as ocio

    builtin = "ocio://studio-config-latest" if "studio" in config else "ocio://cg-config-latest"
    names = tuple(space.getName() for space in ocio.Config.CreateFromFile(builtin).getColorSpaces())
    return names + OCIO_ROLES


class Colorspace_Knob(Knob):
    """A Read / Write colorspace knob: only the root config's names (as Nuke's menu lists them)."""

    def setValue(self, value: Any) -> bool:
        config = (
            _ROOT._knobs["OCIO_config"]._value if _ROOT._knobs["colorManagement"]._value == "OCIO" else ""
        )
        allowed = colorspaces(config)
        if value != "default" and value not in allowed:
            raise ValueError(f"colorspace {value!r} is not in OCIO config {config or 'nuke-default'!r}")
        return super().setValue(value)


# ---------------------------------------------------------------------------------------- nodes

MERGE_OPERATIONS = (
    "atop", "average", "color-burn", "color-dodge", "conjoint-over", "copy", "difference",
    "disjoint-over", "divide", "exclusion", "from", "geometric", "hard-light", "hypot", "in", "mask",
    "matte", "max", "min", "minus", "multiply", "out", "over", "overlay", "plus", "screen",
    "soft-light", "stencil", "under", "xor",
)  # fmt: skip

_DEFAULT_KNOBS: dict[str, dict[str, Any]] = {
    "Switch": {"which": 0, "label": ""},
    "Merge2": {"operation": "over", "mix": 1.0, "label": ""},
    "Group": {"label": ""},
    "Input": {"number": 0},
    "Output": {},
    "Read": {
        "file": "",
        "first": 1,
        "last": 1,
        "origfirst": 1,
        "origlast": 1,
        "frame_mode": "expression",
        "frame": "",
        "label": "",
        "colorspace": "default",
        "raw": False,
    },
    "Write": {
        "file": "",
        "file_type": "",
        "datatype": "16 bit half",
        "compression": "Zip (1 scanline)",
        "channels": "rgb",
        "use_limit": False,
        "first": 1,
        "last": 1,
        "label": "",
    },
}


class Node:
    def __init__(self, cls: str, knobs: dict[str, Any]) -> None:
        _COUNTS[cls] = _COUNTS.get(cls, 0) + 1
        self._class = cls
        self._knobs = {k: Knob(k, value=v) for k, v in {**_DEFAULT_KNOBS.get(cls, {}), **knobs}.items()}
        self._knobs.setdefault("name", Knob("name", value=f"{cls}{_COUNTS[cls]}"))
        if "colorspace" in self._knobs:
            self._knobs["colorspace"] = Colorspace_Knob("colorspace", value=self._knobs["colorspace"]._value)
        if cls == "Merge2":
            operation = Enumeration_Knob("operation", "operation", list(MERGE_OPERATIONS))
            operation.setValue(self._knobs["operation"]._value)
            self._knobs["operation"] = operation
        self._inputs: dict[int, Any] = {}
        self._selected = False
        self._xy = (0, 0)

    def Class(self) -> str:
        _record("Node.Class", main_only=True)
        return self._class

    def name(self) -> str:
        _record("Node.name", main_only=True)
        return self._knobs["name"]._value

    def knob(self, name: str) -> Knob | None:
        _record(f"Node.knob:{name}", main_only=True)
        return self._knobs.get(name)

    def __getitem__(self, name: str) -> Knob:
        _record(f"Node.getitem:{name}", main_only=True)
        if name not in self._knobs:
            raise NameError(f"knob {name} does not exist")
        return self._knobs[name]

    def knobs(self) -> dict[str, Knob]:
        return dict(self._knobs)

    def firstFrame(self) -> int:
        return int(self["first"].value())

    def lastFrame(self) -> int:
        return int(self["last"].value())

    def format(self) -> Format:
        """A Read's format is its file's (first frame's displayWindow and pixelAspectRatio); other nodes
        have the root format."""
        _record("Node.format", main_only=True)
        if self._class != "Read":
            return _ROOT.format()
        import OpenEXR

        path = self._knobs["file"]._value.replace("####", f"{int(self._knobs['first']._value):04d}")
        with OpenEXR.File(path, header_only=True) as exr:
            header = exr.header()
            (x0, y0), (x1, y1) = header["displayWindow"]
            aspect = float(header.get("pixelAspectRatio", 1.0))
        return Format(int(x1 - x0 + 1), int(y1 - y0 + 1), aspect, "")

    def xpos(self) -> int:
        _record("Node.xpos", main_only=True)
        return self._xy[0]

    def ypos(self) -> int:
        _record("Node.ypos", main_only=True)
        return self._xy[1]

    def setXYpos(self, x: int, y: int) -> None:
        _record("Node.setXYpos", main_only=True)
        self._xy = (int(x), int(y))

    def setInput(self, i: int, node: Any) -> bool:
        _record("Node.setInput", main_only=True)
        self._inputs[i] = node
        return True

    def input(self, i: int) -> Any:
        return self._inputs.get(i)

    def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:  # noqa: N803
        """Rename; with uncollide a name in use gets the lowest free number appended (TTT, TTT1, ...)."""
        _record("Node.setName", main_only=True)
        scope = _CONTEXT[-1]._children if _CONTEXT else _ALL
        taken = {n._knobs["name"]._value for n in scope if n is not self}
        if name in taken:
            if not uncollide:
                raise ValueError(f"name {name!r} is already in use")
            name = next(f"{name}{i}" for i in range(1, len(taken) + 2) if f"{name}{i}" not in taken)
        self._knobs["name"]._value = name

    def inputs(self) -> int:
        """How many inputs are connected up to the last one (Nuke: the highest connected input + 1)."""
        _record("Node.inputs", main_only=True)
        connected = [i for i, node in self._inputs.items() if node is not None]
        return max(connected) + 1 if connected else 0

    def setSelected(self, selected: bool) -> None:
        _record("Node.setSelected", main_only=True)
        self._selected = bool(selected)

    def isSelected(self) -> bool:
        return self._selected


class Group(Node):
    """A Group node: nodes made between begin() and end() belong to it (Nuke's context)."""

    def __init__(self, cls: str, knobs: dict[str, Any]) -> None:
        super().__init__(cls, knobs)
        self._children: list[Node] = []

    def begin(self) -> Group:
        _record("Group.begin", main_only=True)
        _CONTEXT.append(self)
        return self

    def end(self) -> None:
        _record("Group.end", main_only=True)
        if not _CONTEXT or _CONTEXT[-1] is not self:
            raise RuntimeError(f"{self._knobs['name']._value}.end() without its begin()")
        _CONTEXT.pop()

    def nodes(self) -> list[Node]:
        _record("Group.nodes", main_only=True)
        return list(self._children)


_CONTEXT: list[Group] = []  # groups entered with begin(); nodes go into the innermost


class _Nodes:
    """nuke.nodes.<Class>(**knobs): made in the current context (the root, or a group after begin())."""

    def __getattr__(self, cls: str) -> Callable[..., Node]:
        def make(**knobs: Any) -> Node:
            _record(f"nodes.{cls}", main_only=True)
            if cls in ("Input", "Output") and not _CONTEXT:
                raise RuntimeError(f"nuke.nodes.{cls}() belongs inside a group (Group.begin())")
            node = Group(cls, knobs) if cls == "Group" else Node(cls, knobs)
            if _CONTEXT:
                _CONTEXT[-1]._children.append(node)
            else:
                _ALL.append(node)
            return node

        return make


nodes = _Nodes()


class _Root(Node):
    def __init__(self) -> None:
        super().__init__(
            "Root",
            {
                "fps": 24.0,
                "first_frame": 1,
                "last_frame": 100,
                "name": "root",
                "colorManagement": "OCIO",
                "OCIO_config": "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1",
                "workingSpaceLUT": "scene_linear",
            },
        )
        self._knobs["format"] = Format_Knob("format", value=_FORMATS["HD_1080"])

    def format(self) -> Format:
        _record("Root.format", main_only=True)
        return self._knobs["format"]._value

    def firstFrame(self) -> int:
        return int(self["first_frame"].value())

    def lastFrame(self) -> int:
        return int(self["last_frame"].value())

    def fps(self) -> float:
        return float(self["fps"].value())


_ROOT = _Root()


def root() -> _Root:
    _record("root", main_only=True)
    return _ROOT


def allNodes(filter: str | None = None) -> list[Node]:  # noqa: A002 - Nuke's own parameter name
    _record("allNodes", main_only=True)
    return [n for n in _ALL if filter is None or n._class == filter]


def toNode(name: str) -> Node | None:
    """The node of that name in the root ("Group1.Read1" inside a group); None when there is none."""
    _record("toNode", main_only=True)
    scope: list[Node] = _ALL
    node = None
    for part in name.split("."):
        node = next((n for n in scope if n._knobs["name"]._value == part), None)
        if node is None:
            return None
        scope = node._children if isinstance(node, Group) else []
    return node


def selectedNode() -> Node:
    _record("selectedNode", main_only=True)
    chosen = [n for n in _ALL if n._selected]
    if not chosen:
        raise ValueError("no node selected")
    return chosen[-1]


def selectedNodes() -> list[Node]:
    _record("selectedNodes", main_only=True)
    return [n for n in _ALL if n._selected]


def delete(node: Node) -> None:
    _record("delete", main_only=True)
    _ALL.remove(node)


def execute(node: Node, first: int, last: int, incr: int = 1) -> None:
    """Render a Write node: every frame becomes a real half-float ZIP EXR (a grey frame)."""
    _record("execute", main_only=True)
    if node._class != "Write":
        raise RuntimeError(f"{node._knobs['name']._value} cannot be executed")
    import OpenEXR

    pattern = node._knobs["file"]._value
    for frame in range(first, last + 1, incr):
        path = pattern.replace("####", f"{frame:04d}").replace("%04d", f"{frame:04d}")
        pixels = np.full((16, 16, 4), 0.18, np.float16)
        OpenEXR.File(
            {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"RGBA": pixels}
        ).write(path)


def message(text: str) -> None:
    _record("message", main_only=True)
    MESSAGES.append(text)


def pluginAddPath(path: str) -> None:
    _record("pluginAddPath")


# ---------------------------------------------------------------------------------------- threads


def executeInMainThread(fn: Callable[..., Any], args: Any = (), kwargs: dict | None = None) -> None:
    _record("executeInMainThread")
    _MAIN_QUEUE.put(
        (fn, tuple(args) if isinstance(args, (tuple, list)) else (args,), dict(kwargs or {}), None)
    )


def executeInMainThreadWithResult(fn: Callable[..., Any], args: Any = (), kwargs: dict | None = None) -> Any:
    _record("executeInMainThreadWithResult")
    call_args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if threading.current_thread() is MAIN_THREAD:
        return fn(*call_args, **dict(kwargs or {}))
    box: dict = {"done": threading.Event()}
    _MAIN_QUEUE.put((fn, call_args, dict(kwargs or {}), box))
    box["done"].wait()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class ProgressTask:
    TASKS: list[Any] = []

    def __init__(self, name: str) -> None:
        _record("ProgressTask")
        self.name = name
        self.progress = 0
        self.messages: list[str] = []
        self._cancelled = False
        ProgressTask.TASKS.append(self)

    def setProgress(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError(f"setProgress takes an int percentage, got {type(value).__name__}")
        self.progress = value

    def setMessage(self, text: str) -> None:
        self.messages.append(text)

    def isCancelled(self) -> bool:
        return self._cancelled

    @classmethod
    def cancel_all(cls) -> None:
        """Test helper: the user clicks Cancel in every progress window."""
        for task in cls.TASKS:
            task._cancelled = True


# ---------------------------------------------------------------------------------------- menus


class MenuItem:
    def __init__(self, name: str, command: Any) -> None:
        self._name, self.command = name, command

    def name(self) -> str:
        return self._name

    def invoke(self) -> Any:
        return self.command() if callable(self.command) else exec(self.command, {})  # noqa: S102


class Menu:
    def __init__(self, name: str) -> None:
        self._name = name
        self.items: dict[str, Any] = {}

    def name(self) -> str:
        return self._name

    def addMenu(self, name: str, icon: str = "") -> Menu:
        _record("Menu.addMenu", main_only=True)
        return self.items.setdefault(name, Menu(name))

    def addCommand(
        self,
        name: str,
        command: Any = None,
        shortcut: str = "",
        icon: str = "",
        tooltip: str = "",
        index: int = -1,
    ) -> MenuItem:
        _record("Menu.addCommand", main_only=True)
        item = MenuItem(name, command)
        self.items[name] = item
        return item

    def findItem(self, name: str) -> Any:
        return self.items.get(name)


def menu(name: str) -> Menu:
    _record("menu", main_only=True)
    return _MENUS.setdefault(name, Menu(name))


# ---------------------------------------------------------------------------------------- test helpers


def reset() -> None:
    global MODAL_RESULT
    CALLS.clear()
    MESSAGES.clear()
    _ALL.clear()
    _CONTEXT.clear()
    _MENUS.clear()
    _COUNTS.clear()
    ProgressTask.TASKS.clear()
    MODAL_RESULT = True
    while not _MAIN_QUEUE.empty():
        _MAIN_QUEUE.get_nowait()
    _ROOT._knobs["fps"]._value = 24.0
    _ROOT._knobs["format"]._value = _FORMATS["HD_1080"]
    _ROOT._knobs["colorManagement"]._value = "OCIO"
    _ROOT._knobs["OCIO_config"]._value = "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1"
    _ROOT._knobs["workingSpaceLUT"]._value = "scene_linear"


def run_main_loop(
    until: Callable[[], bool],
    timeout: float = 60.0,
    tick: float = 0.005,
    on_tick: Callable[[], None] | None = None,
) -> float:
    """Nuke's event loop on the calling (main) thread: run queued main-thread calls until `until()`;
    returns the longest time between two loop iterations (how long the UI was blocked)."""
    assert threading.current_thread() is MAIN_THREAD, "run the fake's main loop on the main thread"
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    longest = 0.0
    while True:
        while True:
            try:
                fn, args, kwargs, box = _MAIN_QUEUE.get_nowait()
            except queue.Empty:
                break
            try:
                result = fn(*args, **kwargs)
                if box is not None:
                    box["result"] = result
            except BaseException as exc:  # noqa: BLE001 - handed back to the waiting thread
                if box is None:
                    raise
                box["error"] = exc
            finally:
                if box is not None:
                    box["done"].set()
        if on_tick is not None:
            on_tick()
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        if until() and _MAIN_QUEUE.empty():
            return longest
        if now > deadline:
            raise TimeoutError(f"fake nuke main loop: condition not met in {timeout} s")
        time.sleep(tick)


# ---------------------------------------------------------------------------------------- nukescripts

nukescripts = types.ModuleType("nukescripts")


class PythonPanel:
    def __init__(self, title: str = "", id: str = "", scrollable: bool = True) -> None:  # noqa: A002
        _record("PythonPanel", main_only=True)
        self.title, self.id = title, id
        self._knobs: dict[str, Knob] = {}

    def addKnob(self, knob: Knob) -> None:
        self._knobs[knob.name()] = knob

    def knobs(self) -> dict[str, Knob]:
        return dict(self._knobs)

    def showModalDialog(self) -> bool:
        _record("PythonPanel.showModalDialog", main_only=True)
        return MODAL_RESULT

    def knobChanged(self, knob: Knob) -> None:
        pass


nukescripts.PythonPanel = PythonPanel  # type: ignore[attr-defined]
sys.modules.setdefault("nukescripts", nukescripts)

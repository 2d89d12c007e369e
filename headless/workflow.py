"""Workflows for the headless runner: read both ComfyUI formats into one API-format graph and
check the whole graph against the node classes before anything runs.

The API format is `{node_id: {"class_type": ..., "inputs": {name: value or [source_id, output_index]}}}`.
The editor's UI format (`nodes` + `links`, widget values by position) is converted to it the way
the editor does when it queues a prompt: frontend-only nodes resolved, muted nodes left out,
bypassed nodes passing their inputs through.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
from typing import Any, Iterable, Mapping

from ..errors import NodeInputError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_WIDGET_NAMES = frozenset({"seed", "noise_seed"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
ANY_TYPE = "*"

MODE_MUTED = 2
MODE_BYPASSED = 4
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})

MAX_LISTED_CHOICES = 20
MAX_NESTING = 100
"""JSON nested deeper than this is not a workflow (the editor's nests a few levels); refusing it up front keeps
reading, copying and checking it from running out of stack."""
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


class WorkflowError(ValueError):
    """A workflow that cannot run: not a workflow at all, or a malformed override."""


class InvalidWorkflow(WorkflowError):
    """A workflow that failed validation; `problems` lists everything that is wrong."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow: where it is and why.

    `kind` is the error type ComfyUI's server reports for the same fault where it has one
    (`required_input_missing`, `return_type_mismatch`, `value_smaller_than_min`, ...).
    """

    kind: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    input_name: str | None = None

    def __str__(self) -> str:
        if self.node_id is None:
            where = "workflow"
        elif self.class_type is None:
            where = f"node {self.node_id}"
        else:
            where = f"node {self.node_id} ({self.class_type})"
        if self.input_name is not None:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------- node classes


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class."""

    name: str
    type: Any  # a type name, or a list of choices (a combo)
    options: dict
    required: bool

    @property
    def socket_type(self) -> str:
        return "COMBO" if isinstance(self.type, (list, tuple)) else str(self.type)

    @property
    def choices(self) -> list | None:
        if isinstance(self.type, (list, tuple)):
            return list(self.type)
        if self.type == "COMBO":
            return list(self.options.get("options", [])) or None
        return None

    @property
    def is_widget(self) -> bool:
        """Whether the editor shows this input as a widget (and stores its value in `widgets_values`)."""
        return self.socket_type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control_widget(self) -> bool:
        """Whether the editor stores a `control_after_generate` value right after this widget."""
        by_name = self.socket_type == "INT" and self.name in SEED_WIDGET_NAMES
        return self.socket_type in ("INT", "COMBO") and bool(self.options.get("control_after_generate", by_name))

    @property
    def has_upload_widget(self) -> bool:
        """A required file combo gets an upload button, which the editor adds after all other widgets."""
        return self.required and self.socket_type == "COMBO" and any(self.options.get(key) for key in UPLOAD_OPTIONS)

    def default_value(self) -> Any:
        """The value the editor gives a widget that a saved workflow does not mention."""
        if "default" in self.options:
            return self.options["default"]
        choices = self.choices
        return choices[0] if choices else None


def input_specs(declared: Mapping) -> dict[str, InputSpec]:
    """The required, then optional inputs of an `INPUT_TYPES()` dict, in declaration order."""
    inputs = {}
    for section in ("required", "optional"):
        for name, entry in (declared.get(section) or {}).items():
            entry = entry if isinstance(entry, (list, tuple)) else (entry,)
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            inputs[name] = InputSpec(name, entry[0], options, section == "required")
    return inputs


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """What the runner needs to know about a node class, read once from its classic-API attributes."""

    class_type: str
    node_class: type
    inputs: dict[str, InputSpec]  # required, then optional, in declaration order
    hidden: dict[str, str]  # input name -> PROMPT / EXTRA_PNGINFO / UNIQUE_ID / ...
    return_types: tuple
    function: str
    is_output: bool
    validate_params: frozenset[str] | None  # VALIDATE_INPUTS' parameter names; None: no such method
    validate_takes_all: bool  # VALIDATE_INPUTS(**kwargs)

    @classmethod
    def of(cls, class_type: str, node_class: type) -> NodeSpec:
        """Read a node class; raises if it does not follow the classic node API."""
        declared = node_class.INPUT_TYPES()
        inputs = input_specs(declared)
        hidden = {name: (kind[0] if isinstance(kind, (list, tuple)) else kind)
                  for name, kind in (declared.get("hidden") or {}).items()}
        function = node_class.FUNCTION
        if not callable(getattr(node_class, function, None)):
            raise TypeError(f"FUNCTION names {function!r}, which the class does not have")
        validate = getattr(node_class, "VALIDATE_INPUTS", None)
        params = None
        takes_all = False
        if validate is not None:
            signature = inspect.signature(validate).parameters.values()
            params = frozenset(p.name for p in signature if p.kind is not p.VAR_KEYWORD)
            takes_all = any(p.kind is p.VAR_KEYWORD for p in signature)
        return cls(class_type, node_class, inputs, hidden, tuple(node_class.RETURN_TYPES), function,
                   getattr(node_class, "OUTPUT_NODE", False) is True, params, takes_all)

    def widgets(self) -> list[InputSpec]:
        return [spec for spec in self.inputs.values() if spec.is_widget]

    def widget_positions(self, saved_node: Mapping | None = None) -> dict[str, int]:
        """Index of each widget's value in a node's positional `widgets_values`, as the editor saved it.

        The editor (frontend 1.27) creates the widgets in input order, required then optional; after
        a seed widget comes its `control_after_generate` value, and a file-upload button (`upload`)
        adds one value after all widgets. Which widgets the node had when it was saved is read from its
        `inputs[].widget` entries (every widget has one since frontend 1.16, the upload button too in
        recent ones) when they account for every saved value; otherwise (older frontends list only
        converted widgets) from this class.
        """
        saved_node = saved_node or {}
        saved = saved_node.get("widgets_values")
        has_upload = any(spec.has_upload_widget for spec in self.widgets())
        saved_names = [slot["widget"]["name"] for slot in saved_node.get("inputs") or []
                       if isinstance(slot, Mapping) and isinstance(slot.get("widget"), Mapping)
                       and isinstance(slot["widget"].get("name"), str)]
        if saved_names and isinstance(saved, list):
            positions, count = self._positions(saved_names)
            if len(saved) in (count, count + has_upload):
                return positions
        return self._positions([spec.name for spec in self.widgets()])[0]

    def _positions(self, names: list[str]) -> tuple[dict[str, int], int]:
        """(name -> index, number of values) for widgets created in the order of `names`."""
        positions = {}
        index = 0
        for name in names:
            spec = self.inputs.get(name)
            if spec is not None and spec.is_widget:
                positions[name] = index
            index += 1 + bool(spec is not None and spec.is_widget and spec.has_control_widget)
        return positions, index

    def checks_range_itself(self, input_name: str) -> bool:
        """Inputs named in VALIDATE_INPUTS' signature skip the built-in range and choice checks."""
        return self.validate_takes_all or (self.validate_params is not None and input_name in self.validate_params)


class NodeSpecs:
    """The node classes of a run, read lazily; classes that cannot be read are remembered with the reason."""

    def __init__(self, node_classes: Mapping[str, type]):
        self._classes = node_classes
        self._specs: dict[str, NodeSpec | None] = {}
        self.broken: dict[str, str] = {}

    def get(self, class_type: str) -> NodeSpec | None:
        if class_type not in self._specs:
            node_class = self._classes.get(class_type)
            spec = None
            if node_class is not None:
                try:
                    spec = NodeSpec.of(class_type, node_class)
                except Exception as exc:  # a broken node class is reported, not fatal
                    self.broken[class_type] = f"{type(exc).__name__}: {exc}"
            self._specs[class_type] = spec
        return self._specs[class_type]

    def known(self, class_type: str) -> bool:
        return class_type in self._classes


def pack_node_classes() -> Mapping[str, type]:
    """The pack's `NODE_CLASS_MAPPINGS`, looked up at call time."""
    from .. import nodes

    return nodes.NODE_CLASS_MAPPINGS


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class LoadedWorkflow:
    """A workflow in API format, with what the conversion noticed on the way."""

    prompt: dict[str, dict]
    ui_workflow: dict | None = None  # the editor's workflow, if that was the input format
    problems: list[Problem] = dataclasses.field(default_factory=list)
    dropped_links: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """(node id, input name) -> why the link into that input was dropped (a muted source, ...)."""
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)
    """UI node id -> why it is not part of the prompt (muted, bypassed, frontend-only)."""
    malformed: set[str] = dataclasses.field(default_factory=set)
    """Node ids whose inputs could not be read (a problem says why); their inputs are not checked further."""


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def load_workflow(data: Any, specs: NodeSpecs) -> LoadedWorkflow:
    """Convert either workflow format to an API-format prompt (a new dict; `data` is not changed).

    Raises `WorkflowError` for data that is no workflow at all, `InvalidWorkflow` for a workflow whose
    nodes or links are not shaped as ComfyUI writes them.
    """
    depth = nesting_depth(data)
    if depth > MAX_NESTING:
        raise WorkflowError(f"not a ComfyUI workflow: its JSON nests more than {MAX_NESTING} levels deep")
    if is_ui_workflow(data):
        problems = ui_structure_problems(data)
        if problems:
            raise InvalidWorkflow(problems)
        try:
            return _UiGraph(data, specs).to_api()
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise WorkflowError(f"malformed editor workflow: {type(exc).__name__}: {exc}") from exc
    if isinstance(data, Mapping) and all(isinstance(node, Mapping) for node in data.values()):
        return _api_prompt(data)
    raise WorkflowError("not a ComfyUI workflow: expected the editor's format (with 'nodes' and 'links') "
                        "or the API format ({node_id: {'class_type': ..., 'inputs': {...}}})")


def nesting_depth(data: Any, stop_after: int = MAX_NESTING) -> int:
    """How deep lists and objects nest in `data` (a scalar is 0), counted without recursion up to `stop_after` + 1."""
    deepest = 0
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_after:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words ("a list", "a string", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    for kinds, name in (((int, float), "a number"), (str, "a string"), (list, "a list"), (Mapping, "an object")):
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def _api_prompt(data: Mapping) -> LoadedWorkflow:
    """An API-format prompt; a node whose `inputs` is not an object is a problem (and is not checked further)."""
    loaded = LoadedWorkflow({})
    for node_id, node in data.items():
        node_id = str(node_id)
        class_type = node.get("class_type")
        inputs = node.get("inputs")
        if inputs is not None and not isinstance(inputs, Mapping):
            described = class_type if isinstance(class_type, str) else None
            loaded.problems.append(Problem(
                "invalid_prompt", f"'inputs' is {_json_kind(inputs)}; it must be an object of input names to "
                                  "values or [node_id, output_index] links", node_id, described))
            loaded.malformed.add(node_id)
            inputs = None
        loaded.prompt[node_id] = {"class_type": class_type, "inputs": dict(inputs or {})}
    return loaded


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def ui_structure_problems(data: Mapping) -> list[Problem]:
    """Where an editor workflow's nodes or links are not shaped as the editor saves them."""
    problems = []
    fix = "; re-save the workflow from the editor"
    for position, node in enumerate(data["nodes"]):
        if not isinstance(node, Mapping) or not _is_id(node.get("id")):
            what = "not an object" if not isinstance(node, Mapping) else "without an 'id'"
            problems.append(Problem("invalid_prompt", f"entry {position} of 'nodes' is {what}{fix}"))
            continue
        node_id = str(node["id"])
        node_type = node.get("type") if isinstance(node.get("type"), str) else None

        def fault(message: str, input_name: str | None = None) -> None:
            problems.append(Problem("invalid_prompt", message + fix, node_id, node_type, input_name))

        for key in ("inputs", "outputs"):
            slots = node.get(key)
            if slots is not None and not (isinstance(slots, list) and all(isinstance(s, Mapping) for s in slots)):
                fault(f"'{key}' is {_json_kind(slots)}; it must be a list of slot objects")
        slots = node.get("inputs")
        for slot in slots if isinstance(slots, list) else []:
            if not isinstance(slot, Mapping):
                break
            widget = slot.get("widget")
            if not isinstance(slot.get("name"), str):
                fault("an input slot has no name")
            elif widget is not None and not (isinstance(widget, Mapping) and isinstance(widget.get("name", ""), str)):
                fault(f"the slot's 'widget' is {_json_kind(widget)}; it must be an object with a name", slot["name"])
            elif slot.get("link") is not None and not _is_id(slot["link"]):
                fault(f"the slot's 'link' is {_json_kind(slot['link'])}; it must be a link id or null", slot["name"])
        saved = node.get("widgets_values")
        if saved is not None and not isinstance(saved, (list, Mapping)):
            fault(f"'widgets_values' is {_json_kind(saved)}; it must be a list (or an object) of widget values")
    links = data.get("links")
    if links is not None and not isinstance(links, list):
        problems.append(Problem("invalid_prompt", f"'links' is {_json_kind(links)}; it must be a list{fix}"))
    for link in links if isinstance(links, list) else []:
        if not _is_ui_link(link):
            problems.append(Problem("invalid_prompt", f"the link {_show(link)[:80]} is not [id, origin_id, "
                                    f"origin_slot, target_id, target_slot, type]{fix}"))
    definitions = data.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
    if definitions is not None and not (isinstance(definitions, Mapping) and (
            subgraphs is None or (isinstance(subgraphs, list) and all(isinstance(s, Mapping) for s in subgraphs)))):
        problems.append(Problem("invalid_prompt", f"'definitions' is not an object with a list of subgraphs{fix}"))
    return problems


def _is_ui_link(link: Any) -> bool:
    """A link as the editor saves it: a list or an object with id, origin id and slot, target id and slot."""
    if isinstance(link, Mapping):
        fields = [link.get(key) for key in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
    elif isinstance(link, list) and len(link) >= 5:
        fields = link[:5]
    else:
        return False
    return all(_is_id(field) for field in fields) and all(
        isinstance(slot, int) and not isinstance(slot, bool) and slot >= 0 for slot in (fields[2], fields[4]))


def _wrap_widget_value(value: Any) -> Any:
    """Lists mean links in the API format; a list-valued widget travels as {"__value__": [...]}."""
    return {"__value__": value} if isinstance(value, list) else value


def unwrap_value(value: Any) -> Any:
    """The constant an API-format input value stands for (see `_wrap_widget_value`)."""
    return value["__value__"] if isinstance(value, dict) and "__value__" in value else value


@dataclasses.dataclass(frozen=True)
class _Link:
    node_id: str
    output_index: int


@dataclasses.dataclass(frozen=True)
class _Value:
    value: Any


@dataclasses.dataclass(frozen=True)
class _Missing:
    reason: str


class _UiGraph:
    """The editor's node/link graph and its conversion to the API format."""

    def __init__(self, data: Mapping, specs: NodeSpecs):
        self.data = data
        self.specs = specs
        self.nodes = {str(node["id"]): node for node in data["nodes"]}
        self.links = {}
        for link in data.get("links") or []:
            if isinstance(link, Mapping):
                fields = (link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"])
            else:
                fields = tuple(link[:5])
            self.links[fields[0]] = (str(fields[1]), int(fields[2]))  # link id -> (origin node, origin slot)
        self.subgraph_ids = {sub.get("id") for sub in (data.get("definitions") or {}).get("subgraphs") or []}

    def to_api(self) -> LoadedWorkflow:
        loaded = LoadedWorkflow({}, ui_workflow=copy.deepcopy(dict(self.data)))
        for node_id, node in self.nodes.items():
            node_type = node.get("type")
            refusal = self._refusal(node_type)
            if refusal:
                loaded.problems.append(Problem("unsupported_node", refusal, node_id, node_type))
            elif node_type in NOTE_TYPES or node_type in (REROUTE, PRIMITIVE):
                loaded.left_out[node_id] = f"it is a frontend-only {node_type} node"
            elif node.get("mode") == MODE_MUTED:
                loaded.left_out[node_id] = "it is muted"
            elif node.get("mode") == MODE_BYPASSED:
                loaded.left_out[node_id] = "it is bypassed"
            else:
                loaded.prompt[node_id] = {"class_type": node_type, "inputs": self._inputs(node_id, node, loaded)}
        return loaded

    def _refusal(self, node_type: Any) -> str | None:
        if not isinstance(node_type, str) or not node_type:
            return "the node has no type"
        if node_type in self.subgraph_ids or _UUID.match(node_type):
            return "subgraphs are not supported yet; convert to nodes (right-click the subgraph > Unpack Subgraph)"
        if node_type.startswith(("workflow>", "workflow/")):
            return "group nodes are not supported; convert to nodes (right-click the group node > Convert to nodes)"
        return None

    def _inputs(self, node_id: str, node: Mapping, loaded: LoadedWorkflow) -> dict:
        spec = self.specs.get(node["type"])
        inputs = {name: _wrap_widget_value(value) for name, value in self._widget_values(node, spec).items()}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name") or slot["name"]
            source = self._resolve(slot["link"], slot.get("type", ANY_TYPE), set())
            if isinstance(source, _Link):
                inputs[name] = [source.node_id, source.output_index]
            elif isinstance(source, _Value):
                inputs[name] = _wrap_widget_value(source.value)
            else:  # the input stays unset, or a widget keeps its own value, as in the editor
                loaded.dropped_links[(node_id, name)] = source.reason
        return inputs

    @staticmethod
    def _widget_values(node: Mapping, spec: NodeSpec | None) -> dict:
        """Widget values by input name; widgets the saved workflow lacks get their defaults."""
        if spec is None:
            return {}
        saved = node.get("widgets_values")
        if isinstance(saved, Mapping):
            found = {widget.name: saved[widget.name] for widget in spec.widgets() if widget.name in saved}
        else:
            saved = saved or []
            found = {name: saved[index] for name, index in spec.widget_positions(node).items() if index < len(saved)}
        defaults = {widget.name: widget.default_value() for widget in spec.widgets()
                    if widget.name not in found and widget.default_value() is not None}
        return {**defaults, **found}

    def _resolve(self, link_id: Any, wanted_type: Any, visited: set) -> _Link | _Value | _Missing:
        """Follow a link back through frontend-only and bypassed nodes to a real output or a value."""
        if link_id in visited:
            return _Missing("its link loops back through bypassed or reroute nodes")
        visited.add(link_id)
        if link_id not in self.links:
            return _Missing(f"its link {link_id} is not in the workflow's links")
        origin_id, origin_slot = self.links[link_id]
        origin = self.nodes.get(origin_id)
        if origin is None:  # validation reports the missing node
            return _Link(origin_id, origin_slot)
        origin_type = origin.get("type")
        described = f"node {origin_id} ({origin_type})"
        if origin_type == PRIMITIVE:
            values = origin.get("widgets_values") or []
            return _Value(values[0]) if values else _Missing(f"its source, {described}, has no value")
        if origin_type == REROUTE:
            return self._resolve_input(origin, 0, wanted_type, visited, f"its source, {described}, is not connected")
        if origin.get("mode") == MODE_MUTED:
            return _Missing(f"its source, {described}, is muted")
        if origin.get("mode") == MODE_BYPASSED:
            index = self._bypass_input_index(origin, origin_slot, wanted_type)
            if index is None:
                return _Missing(f"its source, {described}, is bypassed and has no input of type {wanted_type} "
                                "to pass through")
            return self._resolve_input(origin, index, wanted_type, visited,
                                       f"its source, {described}, is bypassed and its matching input is not connected")
        return _Link(origin_id, origin_slot)

    def _resolve_input(self, node: Mapping, index: int, wanted_type: Any, visited: set,
                       unconnected: str) -> _Link | _Value | _Missing:
        slots = node.get("inputs") or []
        link_id = slots[index].get("link") if index < len(slots) else None
        return _Missing(unconnected) if link_id is None else self._resolve(link_id, wanted_type, visited)

    @staticmethod
    def _bypass_input_index(node: Mapping, output_slot: int, wanted_type: Any) -> int | None:
        """The input a bypassed node passes to output `output_slot`, chosen as the editor does:
        the input in the same position if its type fits, else the first input of exactly the
        wanted type, else the first one whose type fits."""
        slots = node.get("inputs") or []
        outputs = node.get("outputs") or []
        output_type = outputs[output_slot].get("type", ANY_TYPE) if output_slot < len(outputs) else ANY_TYPE
        if wanted_type in (ANY_TYPE, ""):
            return output_slot if output_slot < len(slots) else (0 if slots else None)

        def fits(slot):
            return types_match(slot.get("type"), output_type) and types_match(slot.get("type"), wanted_type)

        if output_slot < len(slots) and fits(slots[output_slot]):
            return output_slot
        for candidates in ((i for i, s in enumerate(slots) if s.get("type") == wanted_type),
                           (i for i, s in enumerate(slots) if fits(s))):
            index = next(candidates, None)
            if index is not None:
                return index
        return None


def types_match(output_type: Any, input_type: Any) -> bool:
    """Whether an output of one socket type may feed an input of another.

    `*` matches anything; comma-separated types match when the lists share a type (as in the editor).
    """
    output_type = "COMBO" if isinstance(output_type, (list, tuple)) else str(output_type)
    input_type = "COMBO" if isinstance(input_type, (list, tuple)) else str(input_type)
    if ANY_TYPE in (output_type, input_type) or output_type == input_type:
        return True
    return bool({t.strip() for t in output_type.split(",")} & {t.strip() for t in input_type.split(",")})


# --------------------------------------------------------------------------- overrides


@dataclasses.dataclass(frozen=True)
class Override:
    """`--set NODE_ID.INPUT=VALUE`: a new value for one input."""

    node_id: str
    input_name: str
    value: Any  # VALUE parsed as JSON, or the text itself
    text: str  # VALUE as written

    @classmethod
    def parse(cls, assignment: str) -> Override:
        target, equals, text = assignment.partition("=")
        node_id, dot, input_name = target.partition(".")
        if not equals or not dot or not node_id.strip() or not input_name.strip():
            raise WorkflowError(f"cannot read override {assignment!r}: expected NODE_ID.INPUT=VALUE")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        return cls(node_id.strip(), input_name.strip(), value, text)

    def value_for(self, spec: InputSpec | None) -> Any:
        """The value to use: the text itself where the input takes text (`--set 4.prefix=2024`)."""
        if spec is None or isinstance(self.value, str):
            return self.value
        takes_text = spec.socket_type == "STRING" or self.text in (spec.choices or ())
        return self.text if takes_text else self.value


def apply_overrides(loaded: LoadedWorkflow, overrides: Iterable[Override], specs: NodeSpecs) -> list[Problem]:
    """Set the overridden inputs in the prompt (and the widget values of the UI workflow, so a file
    that embeds it reproduces the run); returns a problem for each override that names nothing."""
    problems = []
    for override in overrides:
        node = loaded.prompt.get(override.node_id)
        if node is None:
            why = loaded.left_out.get(override.node_id, "no node has this id")
            problems.append(Problem("override_unknown_node", f"--set: {why}", override.node_id,
                                    input_name=override.input_name))
            continue
        spec = specs.get(node["class_type"]) if isinstance(node["class_type"], str) else None
        if spec is None:
            continue  # the unknown node type is reported by validation
        input_spec = spec.inputs.get(override.input_name)
        if input_spec is None:
            problems.append(Problem("override_unknown_input",
                                    f"--set: the node has no such input (it has: {', '.join(spec.inputs)})",
                                    override.node_id, spec.class_type, override.input_name))
            continue
        value = override.value_for(input_spec)
        node["inputs"][override.input_name] = _wrap_widget_value(value)
        if loaded.ui_workflow is not None and input_spec.is_widget:
            _set_ui_widget_value(loaded.ui_workflow, override.node_id, spec, override.input_name, value)
    return problems


def _set_ui_widget_value(ui_workflow: dict, node_id: str, spec: NodeSpec, name: str, value: Any) -> None:
    node = next(node for node in ui_workflow["nodes"] if str(node["id"]) == node_id)
    saved = node.get("widgets_values")
    if isinstance(saved, dict):
        saved[name] = value
    elif isinstance(saved, list):
        index = spec.widget_positions(node).get(name)
        if index is not None and index < len(saved):
            saved[index] = value


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass
class PreparedWorkflow:
    """A loaded, overridden and validated workflow, ready to execute when `problems` is empty."""

    prompt: dict[str, dict]  # API format; the needed nodes' constants converted to their input types
    ui_workflow: dict | None
    specs: NodeSpecs
    order: list[str]  # the nodes the output nodes need, each after its inputs
    problems: list[Problem]


def prepare_workflow(data: Any, overrides: Iterable[Override | str] = (),
                     node_classes: Mapping[str, type] | None = None) -> PreparedWorkflow:
    """Load `data` (either format), apply `overrides` and check everything that would run.

    Raises `WorkflowError` only when `data` is not a workflow at all or an override string is malformed
    (`InvalidWorkflow` when an editor workflow's nodes or links are misshapen); every other fault is a `Problem`.
    """
    specs = NodeSpecs(pack_node_classes() if node_classes is None else node_classes)
    loaded = load_workflow(data, specs)
    parsed = [o if isinstance(o, Override) else Override.parse(o) for o in overrides]
    problems = loaded.problems + apply_overrides(loaded, parsed, specs)
    checker = _Validator(loaded, specs)
    order = checker.run()
    problems = sorted(problems + checker.problems,
                      key=lambda problem: (problem.node_id is not None, node_sort_key(problem.node_id or "")))
    prompt = {node_id: checker.normalized.get(node_id, node) for node_id, node in loaded.prompt.items()}
    return PreparedWorkflow(prompt, loaded.ui_workflow, specs, order, problems)


def validate_workflow(data: Any, overrides: Iterable[Override | str] = (),
                      node_classes: Mapping[str, type] | None = None) -> list[Problem]:
    """Every problem that would stop `data` from running (empty: it would run)."""
    return prepare_workflow(data, overrides, node_classes).problems


def node_sort_key(node_id: str) -> tuple:
    """Order node ids numerically where they are numbers ("2" before "10")."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in str(node_id).split(":"))


def _is_link(value: Any) -> bool:
    return isinstance(value, list)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=repr)


class _InputFault(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _InputFault("invalid_input_type", f"value {_show(value)} is not an integer")


def _as_float(value: Any) -> float:
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
    except (ValueError, OverflowError):
        pass
    raise _InputFault("invalid_input_type", f"value {_show(value)[:80]} is not a number")


def _as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _InputFault("invalid_input_type", f"value {_show(value)} is not text")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _InputFault("invalid_input_type", f"value {_show(value)} is not true or false")


_CONVERTERS = {"INT": _as_int, "FLOAT": _as_float, "STRING": _as_string, "BOOLEAN": _as_bool}


def _check_constant(spec: InputSpec, value: Any, check_range: bool = True) -> Any:
    """The value converted to the input's type; raises `_InputFault` if it does not fit."""
    value = unwrap_value(value)
    socket_type = spec.socket_type
    if socket_type in _CONVERTERS:
        value = _CONVERTERS[socket_type](value)
    elif socket_type not in ("COMBO", ANY_TYPE):
        raise _InputFault("invalid_input_type", f"takes a link from a {socket_type} output, not a value")
    if not check_range:
        return value
    if socket_type in ("INT", "FLOAT"):
        if "min" in spec.options and value < spec.options["min"]:
            raise _InputFault("value_smaller_than_min",
                              f"value {_show(value)} is smaller than min {_show(spec.options['min'])}")
        if "max" in spec.options and value > spec.options["max"]:
            raise _InputFault("value_bigger_than_max",
                              f"value {_show(value)} is bigger than max {_show(spec.options['max'])}")
    choices = spec.choices
    if choices is not None and value not in choices:
        listed = ", ".join(_show(choice) for choice in choices[:MAX_LISTED_CHOICES])
        more = len(choices) - MAX_LISTED_CHOICES
        listed += f" and {more} more" if more > 0 else ""
        raise _InputFault("value_not_in_list", f"value {_show(value)} is not one of: {listed}")
    return value


class _Validator:
    """Checks a loaded prompt; fills `problems`, `normalized` (converted constants) and the run order."""

    def __init__(self, loaded: LoadedWorkflow, specs: NodeSpecs):
        self.prompt = loaded.prompt
        self.dropped_links = loaded.dropped_links
        self.malformed = loaded.malformed
        self.specs = specs
        self.problems: list[Problem] = []
        self.normalized: dict[str, dict] = {}

    def run(self) -> list[str]:
        node_ids = sorted(self.prompt, key=node_sort_key)
        outputs = [node_id for node_id in node_ids if self._check_class(node_id) and self._spec(node_id).is_output]
        if not outputs and not self.problems:
            self.problems.append(Problem("prompt_no_outputs", "it has no output node, so nothing would be saved"))
        order = self._execution_order(outputs)
        for node_id in order:
            self._check_inputs(node_id)
        return order

    def _spec(self, node_id: str) -> NodeSpec | None:
        class_type = self.prompt[node_id].get("class_type")
        return self.specs.get(class_type) if isinstance(class_type, str) else None

    def _check_class(self, node_id: str) -> bool:
        """Whether the node's class is known and readable (else a problem is recorded)."""
        class_type = self.prompt[node_id].get("class_type")
        if not isinstance(class_type, str) or not class_type:
            self.problems.append(Problem("invalid_prompt", "the node has no class_type", node_id))
            return False
        if not self.specs.known(class_type):
            self.problems.append(Problem("unknown_node_type", f"unknown node type {class_type!r} "
                                         "(not a node of this pack)", node_id, class_type))
            return False
        if self.specs.get(class_type) is None:
            self.problems.append(Problem("invalid_node_class", f"the node class is broken: "
                                         f"{self.specs.broken[class_type]}", node_id, class_type))
            return False
        return True

    def _execution_order(self, outputs: list[str]) -> list[str]:
        """The nodes the outputs need, each after all its sources (depth first from the outputs)."""
        order: list[str] = []
        state: dict[str, str] = {}  # "visiting" or "done"

        def visit(node_id: str) -> None:
            if state.get(node_id) == "done":
                return
            if state.get(node_id) == "visiting":
                self.problems.append(Problem("dependency_cycle", "the node depends on its own output (a cycle)",
                                             node_id, self.prompt[node_id].get("class_type")))
                return
            state[node_id] = "visiting"
            spec = self._spec(node_id)
            for name, value in self.prompt[node_id]["inputs"].items():
                used = spec is None or name in spec.inputs
                if used and _is_link(value) and len(value) == 2 and str(value[0]) in self.prompt:
                    visit(str(value[0]))
            state[node_id] = "done"
            order.append(node_id)

        for output in outputs:
            visit(output)
        return order

    def _check_inputs(self, node_id: str) -> None:
        spec = self._spec(node_id)
        if spec is None or node_id in self.malformed:
            return
        raw = self.prompt[node_id]["inputs"]
        normalized: dict[str, Any] = {}
        received_types: dict[str, str] = {}
        found = []

        def fault(kind: str, name: str, message: str) -> None:
            found.append(Problem(kind, message, node_id, spec.class_type, name))

        for name, input_spec in spec.inputs.items():
            if name not in raw:
                if input_spec.required:
                    reason = self.dropped_links.get((node_id, name))
                    fault("required_input_missing", name,
                          "required input is missing" + (f" ({reason})" if reason else ""))
                continue
            value = raw[name]
            if _is_link(value):
                link_problem = self._check_link(spec, input_spec, value, received_types)
                if link_problem:
                    fault(*link_problem)
                else:
                    normalized[name] = [str(value[0]), int(value[1])]
                continue
            try:
                converted = _check_constant(input_spec, value, not spec.checks_range_itself(name))
                normalized[name] = _wrap_widget_value(converted)
            except _InputFault as exc:
                fault(exc.kind, name, exc.message)
        if not found and spec.validate_params is not None:
            found.extend(self._custom_validation(node_id, spec, normalized, received_types))
        self.problems.extend(found)
        self.normalized[node_id] = {"class_type": spec.class_type, "inputs": normalized}

    def _check_link(self, spec: NodeSpec, input_spec: InputSpec, value: list,
                    received_types: dict[str, str]) -> tuple[str, str, str] | None:
        """(kind, input name, message) if the link cannot feed the input, else None."""
        name = input_spec.name
        if len(value) != 2 or not isinstance(value[0], (str, int)) or isinstance(value[1], bool) \
                or not isinstance(value[1], int):
            return "bad_linked_input", name, f"malformed link {_show(value)}: expected [node_id, output_index]"
        source_id, output_index = str(value[0]), value[1]
        source = self.prompt.get(source_id)
        if source is None:
            return "missing_linked_node", name, f"linked to node {source_id}, which is not in the workflow"
        source_type = source.get("class_type")
        source_spec = self._spec(source_id)
        if source_spec is None:
            return None  # the unknown or broken source node is reported on its own
        described = f"node {source_id} ({source_type})"
        if not 0 <= output_index < len(source_spec.return_types):
            return ("bad_linked_input", name, f"linked to output {output_index} of {described}, "
                    f"which has {len(source_spec.return_types)} output(s)")
        received = source_spec.return_types[output_index]
        received_types[name] = received
        skip_type_check = spec.validate_params is not None and "input_types" in spec.validate_params
        if not skip_type_check and not types_match(received, input_spec.type):
            return ("return_type_mismatch", name, f"linked to output {output_index} of {described}, which is "
                    f"{received}, but the input takes {input_spec.socket_type}")
        return None

    @staticmethod
    def _custom_validation(node_id: str, spec: NodeSpec, normalized: dict, received_types: dict) -> list[Problem]:
        """Run the class's VALIDATE_INPUTS with the constant inputs it names (linked ones are None)."""
        wanted = set(spec.inputs) if spec.validate_takes_all else spec.validate_params
        arguments = {name: (None if _is_link(value) else unwrap_value(value))
                     for name, value in normalized.items() if name in wanted}
        if "input_types" in spec.validate_params:
            arguments["input_types"] = received_types
        try:
            verdict = spec.node_class.VALIDATE_INPUTS(**arguments)
        except Exception as exc:
            return [Problem("exception_during_validation",
                            f"VALIDATE_INPUTS raised {type(exc).__name__}: {exc}", node_id, spec.class_type)]
        if verdict is True:
            return []
        message = "rejected by the node's own validation" if verdict is False else str(verdict)
        input_name, message = NodeInputError.parts(message, spec.class_type) or (None, message)
        return [Problem("custom_validation_failed", message, node_id, spec.class_type, input_name)]

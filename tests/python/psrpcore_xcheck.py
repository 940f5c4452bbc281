#!/usr/bin/env python3
"""Cross-check psfleet's PSRP codec against psrpcore (an independent implementation).

Run with the venv's python (``scripts/test`` exports it as ``$PSFLEET_PYTHON``); needs
``psrpcore==0.3.1`` only, no network. Input and output are JSON lines (UTF-8, one object
per line, output flushed per line, ASCII-only since non-ASCII is ``\\u``-escaped). The
process exits 0 when it could read its input, even if single lines failed (those get an
``error`` line); it exits 2 on a usage error and 1 if ``server`` mode's own consistency
checks fail.

Modes
=====

``decode``
    stdin:  ``{"id": <any JSON>, "message": "<base64 of one complete PSRP message>"}``
            (40-byte header + CLIXML data, MS-PSRP 2.2.1; either direction).
    stdout: one line per input line, in order: a *decoded message* object (below) with
            ``"id"`` added, or ``{"id": ..., "error": "<text>", "stage": "<stage>"}``
            where stage is ``input`` (bad JSON/base64), ``unpack`` (header),
            ``clixml`` (psrpcore's XML parse or deserializer failed), ``typed``
            (psrpcore's typed message class / event rejected it), ``render``, or
            ``internal`` (a bug in this script or psrpcore; the line adds ``trace``).

``fragments``
    stdin:  ``{"id": <any JSON>, "fragments": "<base64 of concatenated fragments>"}``
            (MS-PSRP 2.2.4; what one or more ``rsp:Stream`` values carry).
    stdout: one line per input line: ``{"id": ..., "messages": [<decoded message>...]}``
            in the order psrpcore completes them, each with an extra ``"object_id"``
            (a message that fails to decode is ``{"object_id", "error", "stage"}``
            in the list); or an error line as above (stage ``fragments`` when the
            fragments themselves are bad: then no message is reported).
            Reassembly is psrpcore's own ``RunspacePool.next_event`` loop (fragment ids
            must count up from 0 per object; objects may interleave). psrpcore does not
            check that a fragment's blob is as long as its length field says, so this
            script does (error ``truncated fragment``), and it reports objects whose end
            fragment never arrived (error ``incomplete object``).

``server``
    stdin:  ignored. Options: ``--amount N`` (fragment payload budget handed to
            psrpcore's ``data_to_send``, default 400 so that large messages split and
            small ones share a payload), ``--include-client`` (also print the client's
            messages).
    stdout: a fixed, deterministic conversation produced by psrpcore's *server*
            ``ServerRunspacePool``/``ServerPipeline`` driven in memory against its own
            ``ClientRunspacePool`` (as psrpcore's tests do). Lines:

            ``{"kind": "message", "message": "<base64 complete PSRP message>",
            "object_id": n, <decoded message fields>}`` for every server->client
            message, in send order (object ids count from 1);

            ``{"kind": "fragments", "fragments": "<base64>", "object_ids": [...],
            "pipeline_id": str|null}`` for every payload ``data_to_send`` produced,
            exactly as psrpcore fragmented it, in order (feed them, concatenated or one
            by one, to a defragmenter);

            with ``--include-client``: ``{"kind": "client_message", ...}`` lines shaped
            like ``message`` for psrpcore's client->server messages.

            The conversation: pool open (SESSION_CAPABILITY with an all-zero RPID as
            Windows sends it, APPLICATION_PRIVATE_DATA with a PSVersionTable,
            RUNSPACEPOOL_STATE Opened); pipeline 1 (PIPELINE_STATE Running -- psrpcore
            sends it, Windows does not --, PIPELINE_OUTPUT of every CLIXML kind, see
            ``_sample_outputs``, ERROR_RECORD, WARNING/VERBOSE/DEBUG records (one with
            invocation info), INFORMATION_RECORD, PROGRESS_RECORD Processing and
            Completed, PIPELINE_STATE Completed); pipeline 2 (output, then PIPELINE_STATE
            Failed with an error record); pipeline 3 (PIPELINE_STATE Stopped with
            psrpcore's PipelineStopped error record); RUNSPACEPOOL_STATE Broken with an
            error record. GUIDs, times, user/computer names and ids are fixed.

Decoded message
===============

``{"destination": int, "message_type": int, "message_type_name": str, "rpid": str,
"pid": str|null, "data_bom": bool, "fields": {...}, "value": <canonical>|null}``

- ``destination``/``message_type``: the little-endian header fields as psrpcore
  unpacks them; ``message_type_name`` is psrpcore's ``PSRPMessageType`` member name
  (CamelCase, e.g. ``SessionCapability``, ``PipelineOutput``).
- ``rpid``/``pid``: the GUIDs as psrpcore reads them (``uuid.UUID(bytes_le=...)``),
  lower-case hyphenated; ``pid`` is ``null`` when all zero (psrpcore maps the empty
  GUID to None).
- ``data_bom``: whether the data started with a UTF-8 BOM (psrpcore strips it; Windows
  servers send one, psrpcore does not).
- ``value``: the canonical rendering (below) of the CLIXML data, ``null`` when the data
  is empty (psrpcore sends ``write_output(None)`` as an empty PIPELINE_OUTPUT;
  END_OF_PIPELINE_INPUT has no data).
- ``fields``: the typed reading psrpcore's message classes and ``PSRPEvent`` subclasses
  give (see FIELDS below).

Canonical rendering of CLIXML ("value")
=======================================

The rendering describes what is on the wire, as psrpcore's deserializer reads it. It is
computed from psrpcore's ``_Serializer.deserialize`` run in *generic* mode: the type
registry is bypassed so every ``<Obj>`` stays a plain ``PSObject`` carrying its wire
type names (normally psrpcore rehydrates registered types into Python classes whose
``FromPSObjectForRemoting`` reshapes the properties, and prefixes unregistered type names
with ``Deserialized.``; neither is on the wire, so neither appears here). The few facts
psrpcore's Python values lose (exact DateTime/TimeSpan/Decimal text, whether a value came
from an ``<Obj>``, the ``<TN>`` names of an ``<Obj>`` wrapping a primitive) are taken
from the same XML elements the deserializer read.

Primitive (every element but ``Obj``/``Ref``)::

    {"t": "<CLIXML tag>", "v": <value>}

    tag                     v
    S, URI, XD, SBK         string, with _xHHHH_ escapes decoded (psrpcore's decoder;
                            surrogate pairs combine; an unpaired surrogate becomes
                            U+FFFD, as String::from_utf16_lossy does); <S /> is ""
    C                       integer: the UTF-16 code unit (the wire text is a number)
    B                       true/false
    By SB U16 I16 U32 I32   JSON integer
    U64 I64
    Sg, Db                  JSON number: the text parsed as an IEEE double (also for
                            Sg; Rust: format the f32 with Display, parse as f64);
                            non-finite values as the strings "NaN", "INF", "-INF"
    D                       string: the element text exactly as on the wire
    DT, TS                  string: the element text exactly as on the wire
    SS                      string: the element text (encrypted, base64) as on the wire
    G                       string: lower-case hyphenated GUID
    Version                 string: "major.minor[.build[.revision]]", components as
                            decimal integers (psrpcore's PSVersion)
    BA                      string: standard base64 (with padding) of the decoded bytes
    Nil                     null
    PR                      object {"Activity": str, "ActivityId": int,
                            "CurrentOperation": str|null, "ParentActivityId": int,
                            "PercentComplete": int, "RecordType": str,
                            "SecondsRemaining": int, "StatusDescription": str}
                            (the <PR> element of CLIXML streams; never in PSRP)

Object (``<Obj>``)::

    {"t": "Obj", "types": [str...], "tostring": str|null, "props": [[name, value]...],
     "ms": [[name, value]...], "coll": "LST"|"IE"|"STK"|"QUE"|"DCT"|null,
     "list": [value...]|null, "dict": [[key, value]...]|null, "inner": <primitive>|null}

- ``types``: the ``<T>`` texts of the object's ``<TN>``, or of the ``<TN>`` its
  ``<TNRef>`` points to, in order, verbatim (not _x-decoded); ``[]`` when neither.
- ``tostring``: the ``<ToString>`` text (_x-decoded), ``null`` when absent (``""`` for
  an empty element).
- ``props``: the ``<Props>`` (adapted) properties, ``ms``: the ``<MS>`` (extended)
  properties, each in document order as ``[name, value]`` with the ``N`` attribute
  _x-decoded. ``[]`` when the element is absent or empty. If a name repeats within one
  group psrpcore keeps one entry (at the first position, with the last value); psfleet
  fixtures should not repeat names.
- ``coll``: which collection element the object has. ``list`` holds the entries of
  ``LST``/``IE``/``STK``/``QUE`` in document order (``[]`` for an empty one, ``null``
  when there is none); ``dict`` holds the ``<En>`` entries of ``DCT`` in document order
  as ``[key, value]`` (the elements with ``N="Key"``/``N="Value"``). psrpcore keys a
  dict by the key's Python value, so repeated keys collapse into the first position
  with the last value.
- ``inner``: for an ``<Obj>`` wrapping a primitive (enums: ``<I32>``; extended
  primitives: ``<S>`` plus ``<MS>``), that primitive, rendered as above; else ``null``.
- ``<Ref RefId="n"/>`` is rendered as the full rendering of the object it refers to
  (psrpcore hands back the same object). Nesting deeper than 100 is an error (a cyclic
  reference cannot be expanded).

FIELDS (per message type)
=========================

Strings are JSON strings or null when absent; ``<rendered X>`` is the canonical
rendering of wire property X (null when absent); enums are their integer values.

- SessionCapability: ``protocol_version``, ``ps_version``, ``serialization_version``
  (Version strings as above), ``time_zone_present`` (bool: a non-null TimeZone).
- InitRunspacePool: ``min_runspaces``, ``max_runspaces``, ``thread_options``,
  ``apartment_state``, ``host_info`` {``is_host_null``, ``is_host_ui_null``,
  ``is_host_raw_ui_null``, ``use_runspace_host``, ``host_default_data_present``},
  ``application_arguments`` (<rendered ApplicationArguments>).
- CreatePipeline (psrpcore's ``PowerShell.FromPSObjectForRemoting``): ``no_input``,
  ``add_to_history``, ``is_nested``, ``apartment_state``, ``remote_stream_options``,
  ``redirect_shell_error_to_out``, ``history``, ``host_info`` (as above), ``commands``:
  [{``cmd``, ``is_script``, ``use_local_scope`` (bool|null), ``end_of_statement``,
  ``merge_unclaimed`` (MergePreviousResults == Output|Error), ``merge_my``,
  ``merge_to``, ``merge_error``, ``merge_warning``, ``merge_verbose``, ``merge_debug``,
  ``merge_information`` (ints; psrpcore uses 0 when the property is absent, as for
  protocol 2.1/2.2), ``args``: [[name|null, <rendered V>]...]}] -- statements from
  ``ExtraCmds`` are flattened in order, the last command of each with
  ``end_of_statement`` true.
- ApplicationPrivateData: ``keys`` (top-level key strings), ``ps_version_table``:
  {name: text} where text is a Version string, a string, an integer as decimal text,
  a bool as "True"/"False", or a list of such texts for an array; null when absent.
- RunspacePoolState: ``state`` (RunspacePoolState: Opened 2, Broken 5, ...), ``error``
  (ERROR fields of ExceptionAsErrorRecord, or null).
- PipelineState: ``state`` (PSInvocationState: Running 1, Stopped 3, Completed 4,
  Failed 5, ...), ``error`` (as above).
- ErrorRecord -- ERROR fields (psrpcore's ``ErrorRecord.FromPSObjectForRemoting``):
  ``message`` (ErrorDetails_Message if set, else the exception's Message),
  ``exception_message``, ``exception_types`` (the Exception object's wire ``types``),
  ``fully_qualified_error_id``, ``category`` (ErrorCategory int),
  ``category_message`` (ErrorCategory_Message), ``activity``, ``reason``,
  ``target_name``, ``target_type``, ``error_details_message``,
  ``error_details_recommended_action``, ``script_stack_trace``,
  ``serialize_extended_info`` (bool), ``invocation_name`` and
  ``invocation_command_name`` (InvocationInfo_InvocationName / CommandInfo_Name, null
  unless SerializeExtendedInfo), ``target_object`` (<rendered TargetObject>).
- DebugRecord, VerboseRecord, WarningRecord: ``message``,
  ``serialize_invocation_info`` (bool), ``invocation_name``,
  ``invocation_command_name`` (null unless invocation info is serialized).
- InformationRecord: ``message_data`` (<rendered MessageData>), ``source``,
  ``time_generated`` (the DT text), ``tags`` ([str]), ``user``, ``computer``,
  ``process_id``, ``native_thread_id``, ``managed_thread_id``.
- ProgressRecord: ``activity``, ``activity_id``, ``status_description``,
  ``current_operation``, ``parent_activity_id``, ``percent_complete``,
  ``record_type`` (Processing 0, Completed 1), ``seconds_remaining``.
- RunspacePoolInitData, ConnectRunspacePool: ``min_runspaces``, ``max_runspaces``.
- SetMaxRunspaces, SetMinRunspaces: ``ci``, ``count``. GetAvailableRunspaces,
  ResetRunspaceState: ``ci``. RunspaceAvailability: ``ci``, ``response`` (bool or int).
- RunspacePoolHostCall, PipelineHostCall: ``ci``, ``method_identifier``,
  ``method_name``. RunspacePoolHostResponse, PipelineHostResponse: ``ci``,
  ``method_identifier``.
- PublicKey, EncryptedSessionKey: ``key`` (base64 of the decoded key bytes).
- Every other type (PipelineOutput, PipelineInput, EndOfPipelineInput, ...): ``{}``.

psrpcore 0.3.1 behaviours to know when comparing
================================================

- Its TimeSpan *writer* drops trailing zeros from whole seconds (10 s is written
  ``PT1S``, -90 s ``-PT1M3S``); its reader is right. The ``server`` fixtures avoid such
  values; do not copy psrpcore's TimeSpan text as a reference for psfleet's encoder.
- It writes NaN as ``NAN`` (.NET writes ``NaN``), a plain Python float as ``<Sg>``, no
  BOM before server data, ``write_output(None)`` as an empty PIPELINE_OUTPUT, and a
  PIPELINE_STATE Running when a server pipeline starts (Windows sends none).
- Property names are case-sensitive to it: pypsrp's ``<I64 N="CI">`` in
  SET_MAX/MIN_RUNSPACES (R:test_psrp_set_runspaces) fails with stage ``typed``;
  MS-PSRP 2.2.2.6 names the property ``ci``.
- Its fragment reader checks fragment ids (0, 1, ... per object) but not the start
  flag nor blob lengths (this script checks the lengths).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import math
import sys
import traceback
import typing
import uuid
from xml.etree import ElementTree

import psrpcore
import psrpcore._base as psrp_base
from psrpcore._crypto import PSRemotingCrypto
from psrpcore._events import PSRPEvent
from psrpcore._payload import EMPTY_UUID, PSRPPayload, StreamType, unpack_fragment, unpack_message
from psrpcore.types import (
    CommandOrigin,
    CommandTypes,
    ConsoleColor,
    EndOfPipelineInput,
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorDetails,
    ErrorRecord,
    InvocationInfo,
    NETException,
    ProgressRecord,
    ProgressRecordType,
    PSByte,
    PSChar,
    PSCustomObject,
    PSDateTime,
    PSDecimal,
    PSDict,
    PSDouble,
    PSDuration,
    PSGuid,
    PSIEnumerable,
    PSInt,
    PSInt16,
    PSInt64,
    PSInvocationState,
    PSList,
    PSNoteProperty,
    PSObject,
    PSPrimitiveDictionary,
    PSQueue,
    PSRPMessageType,
    PSSByte,
    PSScriptBlock,
    PSSingle,
    PSStack,
    PSString,
    PSType,
    PSUInt,
    PSUInt16,
    PSUInt64,
    PSUri,
    PSVersion,
    PSXml,
    RemoteStreamOptions,
    add_note_property,
    deserialize,
)
from psrpcore.types._base import TypeRegistry
from psrpcore.types._serializer import _Serializer

MAX_RENDER_DEPTH = 100
BOM = b"\xef\xbb\xbf"

# Tags whose children are structure, not the primitive an <Obj> may wrap.
_OBJ_STRUCTURE_TAGS = {"TN", "TNRef", "ToString", "Props", "MS", "LST", "IE", "STK", "QUE", "DCT"}
_COLLECTION_TAGS = {"LST", "IE", "STK", "QUE", "DCT"}
# Primitive tags rendered from the wire text rather than psrpcore's Python value.
_TEXT_TAGS = {"D", "DT", "TS", "SS"}


class XCheckError(Exception):
    """A failure in one input line, with the stage it happened in."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


# --------------------------------------------------------------------------------------
# Generic (wire-faithful) deserialization and the canonical rendering
# --------------------------------------------------------------------------------------


class _GenericSerializer(_Serializer):
    """psrpcore's deserializer, remembering the wire facts its Python values drop."""

    def __init__(self) -> None:
        super().__init__(PSRemotingCrypto())
        # id(value) -> (value, info); the value is kept alive so ids cannot be reused.
        self.obj_info: typing.Dict[int, typing.Tuple[typing.Any, typing.Dict[str, typing.Any]]] = {}
        self.text_info: typing.Dict[int, typing.Tuple[typing.Any, str]] = {}

    def deserialize(self, element: ElementTree.Element) -> typing.Any:
        value = super().deserialize(element)
        tag = element.tag
        if tag == "Obj":
            self.obj_info[id(value)] = (value, self._obj_facts(element))
        elif tag in _TEXT_TAGS:
            self.text_info[id(value)] = (value, element.text or "")
        return value

    def _obj_facts(self, element: ElementTree.Element) -> typing.Dict[str, typing.Any]:
        # Same TN/TNRef resolution as psrpcore's deserializer (which has just filled
        # _tn_ref_map for this element).
        types = [t.text or "" for t in element.findall("TN/T")]
        if not types:
            tn_ref = element.find("TNRef")
            if tn_ref is not None:
                types = list(self._tn_ref_map.get(tn_ref.attrib.get("RefId", ""), []))
        inner = None
        coll = None
        for child in element:
            if child.tag in _COLLECTION_TAGS and coll is None:
                coll = child.tag
            elif child.tag not in _OBJ_STRUCTURE_TAGS and inner is None:
                inner = child.tag
        return {"types": types, "inner": inner, "coll": coll}


@contextlib.contextmanager
def _registry_bypassed() -> typing.Iterator[None]:
    """Makes psrpcore rehydrate every <Obj> as a plain PSObject with its wire types."""
    registry = TypeRegistry()

    def generic_rehydrate(type_names: typing.List[str]) -> PSObject:
        obj = PSObject()
        obj.PSObject.type_names = list(type_names)
        return obj

    registry.rehydrate = generic_rehydrate  # type: ignore[method-assign]
    try:
        yield
    finally:
        del registry.rehydrate


def render_clixml(data: bytes) -> typing.Any:
    """Canonical rendering of one CLIXML document (see the module docstring)."""
    element = ElementTree.fromstring(data)
    serializer = _GenericSerializer()
    with _registry_bypassed():
        value = serializer.deserialize(element)
    return _Renderer(serializer).render(value, 0)


class _Renderer:
    def __init__(self, serializer: _GenericSerializer) -> None:
        self._obj_info = serializer.obj_info
        self._text_info = serializer.text_info
        self._tag_of = {cls: tag for tag, cls in TypeRegistry().element_registry.items()}

    def render(self, value: typing.Any, depth: int) -> typing.Any:
        if depth > MAX_RENDER_DEPTH:
            raise XCheckError("render", f"objects nest deeper than {MAX_RENDER_DEPTH} (cyclic Ref?)")
        info = self._obj_info.get(id(value))
        if info is not None and info[0] is value:
            return self._render_obj(value, info[1], depth)
        return self._render_primitive(value)

    def _render_obj(self, value: typing.Any, facts: typing.Dict[str, typing.Any], depth: int) -> typing.Any:
        meta = value.PSObject
        to_string = meta._to_string  # the explicit <ToString>, never psrpcore's str() fallback
        coll = facts["coll"]
        items: typing.Optional[typing.List[typing.Any]] = None
        entries: typing.Optional[typing.List[typing.Any]] = None
        if coll == "DCT":
            entries = [[self.render(k, depth + 1), self.render(v, depth + 1)] for k, v in dict.items(value)]
        elif coll == "QUE":
            items = [self.render(v, depth + 1) for v in list(value.queue)]
        elif coll is not None:
            items = [self.render(v, depth + 1) for v in list.__iter__(value)]
        return {
            "t": "Obj",
            "types": [_text(t) for t in facts["types"]],
            "tostring": None if to_string is None else _text(str(to_string)),
            "props": self._render_props(value, meta.adapted_properties, depth),
            "ms": self._render_props(value, meta.extended_properties, depth),
            "coll": coll,
            "list": items,
            "dict": entries,
            "inner": None if facts["inner"] is None else self._render_primitive(value),
        }

    def _render_props(self, value: typing.Any, props: typing.List[typing.Any], depth: int) -> typing.List[typing.Any]:
        return [[_text(p.name), self.render(p.get_value(value), depth + 1)] for p in props]

    def _render_primitive(self, value: typing.Any) -> typing.Any:
        if value is None:
            return {"t": "Nil", "v": None}
        if isinstance(value, bool):
            return {"t": "B", "v": value}
        if isinstance(value, ProgressRecord):
            return {"t": "PR", "v": _progress_fields_pr(value)}
        tag = self._tag_of.get(type(value))
        if tag is None:
            raise XCheckError("render", f"no CLIXML tag for psrpcore value of type {type(value).__name__}")
        text = self._text_info.get(id(value))
        if tag in _TEXT_TAGS:
            if text is None or text[0] is not value:
                raise XCheckError("render", f"lost the wire text of a {tag}")
            return {"t": tag, "v": _text(text[1])}
        if tag in ("S", "URI", "XD", "SBK"):
            return {"t": tag, "v": _text(str.__str__(value))}
        if tag in ("Sg", "Db"):
            number = float(value)
            if math.isnan(number):
                return {"t": tag, "v": "NaN"}
            if math.isinf(number):
                return {"t": tag, "v": "INF" if number > 0 else "-INF"}
            return {"t": tag, "v": number}
        if tag == "G":
            return {"t": tag, "v": uuid.UUID.__str__(value)}
        if tag == "Version":
            return {"t": tag, "v": str(value)}
        if tag == "BA":
            return {"t": tag, "v": base64.b64encode(bytes(value)).decode()}
        # C, By, SB, U16, I16, U32, I32, U64, I64
        return {"t": tag, "v": int(value)}


def _text(value: str) -> str:
    """Replaces unpaired surrogates with U+FFFD (JSON parsers refuse them)."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _progress_fields_pr(record: ProgressRecord) -> typing.Dict[str, typing.Any]:
    return {
        "Activity": _opt_str(record.Activity),
        "ActivityId": int(record.ActivityId),
        "CurrentOperation": _opt_str(record.CurrentOperation),
        "ParentActivityId": int(record.ParentActivityId),
        "PercentComplete": int(record.PercentComplete),
        "RecordType": record.RecordType.name,
        "SecondsRemaining": int(record.SecondsRemaining),
        "StatusDescription": _opt_str(record.StatusDescription),
    }


# --------------------------------------------------------------------------------------
# Decoding one message: header, generic value, typed fields
# --------------------------------------------------------------------------------------


def decode_message(raw: bytes) -> typing.Dict[str, typing.Any]:
    """Decodes one complete PSRP message with psrpcore (see "Decoded message")."""
    if len(raw) < 40:
        raise XCheckError("unpack", f"message is {len(raw)} bytes, shorter than the 40-byte header")
    try:
        message = unpack_message(bytearray(raw))
    except Exception as e:  # psrpcore raises ValueError for unknown types, struct.error, ...
        raise XCheckError("unpack", _describe(e)) from e
    data = bytes(message.data)

    try:
        value = render_clixml(data) if data else None
    except XCheckError:
        raise
    except Exception as e:
        raise XCheckError("clixml", _describe(e)) from e

    try:
        event = _typed_event(message.message_type, data, message.rpid, message.pid)
        extractor = _FIELDS.get(message.message_type)
        fields = extractor(event, value) if extractor else {}
    except XCheckError:
        raise
    except Exception as e:
        raise XCheckError("typed", _describe(e)) from e

    return {
        "destination": int(message.destination),
        "message_type": int(message.message_type.value),
        "message_type_name": message.message_type.name,
        "rpid": str(message.rpid),
        "pid": None if message.pid is None else str(message.pid),
        "data_bom": raw[40:43] == BOM,
        "fields": fields,
        "value": value,
    }


def _typed_event(
    message_type: PSRPMessageType, data: bytes, rpid: uuid.UUID, pid: typing.Optional[uuid.UUID]
) -> PSRPEvent:
    """What psrpcore's RunspacePool._process_message builds, without the pool's state."""
    ps_object: typing.Any
    if message_type == PSRPMessageType.EndOfPipelineInput:
        ps_object = EndOfPipelineInput()
    elif message_type == PSRPMessageType.PipelineOutput and data == b"":
        ps_object = None
    else:
        ps_object = deserialize(ElementTree.fromstring(data), PSRemotingCrypto())
    return PSRPEvent.create(message_type, ps_object, rpid, pid)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# Helpers over rendered values --------------------------------------------------------


def _rendered_prop(rendered: typing.Any, name: str) -> typing.Any:
    """Wire property `name` of a rendered Obj (extended first, then adapted)."""
    if not isinstance(rendered, dict) or rendered.get("t") != "Obj":
        return None
    for group in ("ms", "props"):
        for prop_name, prop_value in rendered[group]:
            if prop_name == name:
                return prop_value
    return None


def _rendered_list(rendered: typing.Any) -> typing.List[typing.Any]:
    if isinstance(rendered, dict) and rendered.get("t") == "Obj" and rendered["list"] is not None:
        return list(rendered["list"])
    return []


def _opt_str(value: typing.Any) -> typing.Optional[str]:
    return None if value is None else _text(str(value))


def _opt_int(value: typing.Any) -> typing.Optional[int]:
    return None if value is None else int(value)


def _opt_bool(value: typing.Any) -> typing.Optional[bool]:
    return None if value is None else bool(value)


# Field extractors -----------------------------------------------------------------------


def _host_info_fields(host: typing.Any) -> typing.Dict[str, typing.Any]:
    return {
        "is_host_null": bool(host.IsHostNull),
        "is_host_ui_null": bool(host.IsHostUINull),
        "is_host_raw_ui_null": bool(host.IsHostRawUINull),
        "use_runspace_host": bool(host.UseRunspaceHost),
        "host_default_data_present": getattr(host, "HostDefaultData", None) is not None,
    }


def _invocation_names(info: typing.Any) -> typing.Tuple[typing.Optional[str], typing.Optional[str]]:
    if info is None:
        return None, None
    command = getattr(info, "MyCommand", None)
    return _opt_str(getattr(info, "InvocationName", None)), _opt_str(getattr(command, "Name", None))


def _error_fields(record: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    if not isinstance(record, ErrorRecord):
        raise XCheckError("typed", f"psrpcore did not read an ErrorRecord but a {type(record).__name__}")
    category = record.CategoryInfo
    details = record.ErrorDetails
    invocation_name, command_name = _invocation_names(record.InvocationInfo)
    exception = _rendered_prop(rendered, "Exception")
    return {
        "message": _opt_str(str(record)),
        "exception_message": _opt_str(getattr(record.Exception, "Message", None)),
        "exception_types": exception["types"] if isinstance(exception, dict) and "types" in exception else None,
        "fully_qualified_error_id": _opt_str(record.FullyQualifiedErrorId),
        "category": int(category.Category),
        "category_message": _opt_str(category.PSObject.to_string),
        "activity": _opt_str(category.Activity),
        "reason": _opt_str(category.Reason),
        "target_name": _opt_str(category.TargetName),
        "target_type": _opt_str(category.TargetType),
        "error_details_message": _opt_str(getattr(details, "Message", None)),
        "error_details_recommended_action": _opt_str(getattr(details, "RecommendedAction", None)),
        "script_stack_trace": _opt_str(record.ScriptStackTrace),
        "serialize_extended_info": bool(record.serialize_extended_info),
        "invocation_name": invocation_name,
        "invocation_command_name": command_name,
        "target_object": _rendered_prop(rendered, "TargetObject"),
    }


def _state_error(event: typing.Any, rendered: typing.Any) -> typing.Optional[typing.Dict[str, typing.Any]]:
    record = event.reason
    if record is None:
        return None
    return _error_fields(record, _rendered_prop(rendered, "ExceptionAsErrorRecord"))


def _informational_fields(event: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    record = event.record
    invocation_name, command_name = _invocation_names(record.InvocationInfo)
    return {
        "message": _opt_str(record.Message),
        "serialize_invocation_info": bool(record.serialize_extended_info),
        "invocation_name": invocation_name,
        "invocation_command_name": command_name,
    }


def _create_pipeline_fields(event: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    pipeline = event.pipeline
    # The wire Args of every command, flattened like PowerShell.FromPSObjectForRemoting.
    powershell = _rendered_prop(rendered, "PowerShell")
    extra = _rendered_prop(powershell, "ExtraCmds")
    statements = (
        [_rendered_prop(s, "Cmds") for s in _rendered_list(extra)]
        if extra is not None and extra.get("t") == "Obj"
        else [_rendered_prop(powershell, "Cmds")]
    )
    wire_commands = [c for s in statements for c in _rendered_list(s)]
    if len(wire_commands) != len(pipeline.commands):
        raise XCheckError("typed", "psrpcore's command list does not match the wire Cmds")
    commands = []
    for command, wire in zip(pipeline.commands, wire_commands):
        args = []
        for arg in _rendered_list(_rendered_prop(wire, "Args")):
            name = _rendered_prop(arg, "N")
            arg_name = name["v"] if isinstance(name, dict) and name["t"] != "Nil" else None
            args.append([arg_name, _rendered_prop(arg, "V")])
        if len(args) != len(command.parameters):
            raise XCheckError("typed", "psrpcore's parameters do not match the wire Args")
        commands.append(
            {
                "cmd": _opt_str(command.command_text),
                "is_script": bool(command.is_script),
                "use_local_scope": _opt_bool(command.use_local_scope),
                "end_of_statement": bool(command.end_of_statement),
                "merge_unclaimed": bool(command.merge_unclaimed),
                "merge_my": int(command.merge_my),
                "merge_to": int(command.merge_to),
                "merge_error": int(command.merge_error),
                "merge_warning": int(command.merge_warning),
                "merge_verbose": int(command.merge_verbose),
                "merge_debug": int(command.merge_debug),
                "merge_information": int(command.merge_information),
                "args": args,
            }
        )
    return {
        "no_input": bool(pipeline.no_input),
        "add_to_history": bool(pipeline.add_to_history),
        "is_nested": bool(pipeline.is_nested),
        "apartment_state": _opt_int(pipeline.apartment_state),
        "remote_stream_options": _opt_int(pipeline.remote_stream_options),
        "redirect_shell_error_to_out": _opt_bool(pipeline.redirect_shell_error_to_out),
        "history": _opt_str(pipeline.history),
        "host_info": _host_info_fields(pipeline.host),
        "commands": commands,
    }


def _version_table_text(value: typing.Any) -> typing.Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return [_version_table_text(v) for v in value]
    if isinstance(value, int):
        return str(int(value))
    return _text(str(value))


def _app_data_fields(event: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    data = event.data
    table = data.get("PSVersionTable") if isinstance(data, dict) else None
    return {
        "keys": [_text(str(k)) for k in data] if isinstance(data, dict) else [],
        "ps_version_table": (
            {_text(str(k)): _version_table_text(v) for k, v in table.items()} if isinstance(table, dict) else None
        ),
    }


def _information_fields(event: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    record = event.record
    time_generated = _rendered_prop(rendered, "TimeGenerated")
    tags = record.Tags
    return {
        "message_data": _rendered_prop(rendered, "MessageData"),
        "source": _opt_str(record.Source),
        "time_generated": time_generated["v"] if isinstance(time_generated, dict) else None,
        "tags": None if tags is None else [_text(str(t)) for t in tags],
        "user": _opt_str(record.User),
        "computer": _opt_str(record.Computer),
        "process_id": _opt_int(record.ProcessId),
        "native_thread_id": _opt_int(record.NativeThreadId),
        "managed_thread_id": _opt_int(record.ManagedThreadId),
    }


def _progress_fields(event: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    record = event.record
    return {
        "activity": _opt_str(record.Activity),
        "activity_id": _opt_int(record.ActivityId),
        "status_description": _opt_str(record.StatusDescription),
        "current_operation": _opt_str(record.CurrentOperation),
        "parent_activity_id": _opt_int(record.ParentActivityId),
        "percent_complete": _opt_int(record.PercentComplete),
        "record_type": _opt_int(record.RecordType),
        "seconds_remaining": _opt_int(record.SecondsRemaining),
    }


def _key_fields(event: typing.Any, rendered: typing.Any) -> typing.Dict[str, typing.Any]:
    return {"key": base64.b64encode(event.key).decode()}


_T = PSRPMessageType
_FIELDS: typing.Dict[PSRPMessageType, typing.Callable[[typing.Any, typing.Any], typing.Dict[str, typing.Any]]] = {
    _T.SessionCapability: lambda e, r: {
        "protocol_version": _opt_str(e.protocol_version),
        "ps_version": _opt_str(e.ps_version),
        "serialization_version": _opt_str(e.serialization_version),
        "time_zone_present": getattr(e._ps_object, "TimeZone", None) is not None,
    },
    _T.InitRunspacePool: lambda e, r: {
        "min_runspaces": int(e.min_runspaces),
        "max_runspaces": int(e.max_runspaces),
        "thread_options": int(e.ps_thread_options),
        "apartment_state": int(e.apartment_state),
        "host_info": _host_info_fields(e.host_info),
        "application_arguments": _rendered_prop(r, "ApplicationArguments"),
    },
    _T.CreatePipeline: _create_pipeline_fields,
    _T.ApplicationPrivateData: _app_data_fields,
    _T.RunspacePoolState: lambda e, r: {"state": int(e.state), "error": _state_error(e, r)},
    _T.PipelineState: lambda e, r: {"state": int(e.state), "error": _state_error(e, r)},
    _T.ErrorRecord: lambda e, r: _error_fields(e.record, r),
    _T.DebugRecord: _informational_fields,
    _T.VerboseRecord: _informational_fields,
    _T.WarningRecord: _informational_fields,
    _T.InformationRecord: _information_fields,
    _T.ProgressRecord: _progress_fields,
    _T.RunspacePoolInitData: lambda e, r: {
        "min_runspaces": int(e.min_runspaces),
        "max_runspaces": int(e.max_runspaces),
    },
    _T.ConnectRunspacePool: lambda e, r: {
        "min_runspaces": _opt_int(e.min_runspaces),
        "max_runspaces": _opt_int(e.max_runspaces),
    },
    _T.SetMaxRunspaces: lambda e, r: {"ci": int(e.ci), "count": int(e.count)},
    _T.SetMinRunspaces: lambda e, r: {"ci": int(e.ci), "count": int(e.count)},
    _T.GetAvailableRunspaces: lambda e, r: {"ci": int(e.ci)},
    _T.ResetRunspaceState: lambda e, r: {"ci": int(e.ci)},
    _T.RunspaceAvailability: lambda e, r: {
        "ci": int(e.ci),
        "response": (
            bool(e._ps_object.SetMinMaxRunspacesResponse)
            if isinstance(e._ps_object.SetMinMaxRunspacesResponse, bool)
            else int(e._ps_object.SetMinMaxRunspacesResponse)
        ),
    },
    _T.RunspacePoolHostCall: lambda e, r: {
        "ci": int(e.ci),
        "method_identifier": int(e.method_identifier),
        "method_name": e.method_identifier.name,
    },
    _T.PipelineHostCall: lambda e, r: {
        "ci": int(e.ci),
        "method_identifier": int(e.method_identifier),
        "method_name": e.method_identifier.name,
    },
    _T.RunspacePoolHostResponse: lambda e, r: {"ci": int(e.ci), "method_identifier": int(e.method_identifier)},
    _T.PipelineHostResponse: lambda e, r: {"ci": int(e.ci), "method_identifier": int(e.method_identifier)},
    _T.PublicKey: _key_fields,
    _T.EncryptedSessionKey: _key_fields,
}


# --------------------------------------------------------------------------------------
# Fragments: psrpcore's own reassembly loop
# --------------------------------------------------------------------------------------


class _Reassembler(psrp_base.RunspacePool):
    """A psrpcore RunspacePool whose message handler only collects complete messages.

    ``next_event`` is psrpcore's unchanged fragment loop; it hands each completed
    object to ``_process_message``, and the raw bytes it joined come from a wrapper
    around the ``unpack_message`` that loop calls.
    """

    def __init__(self) -> None:
        super().__init__(EMPTY_UUID, application_arguments={}, application_private_data={})
        self.completed: typing.List[typing.Tuple[int, bytes]] = []
        self._joined: typing.List[bytes] = []

    def _process_message(self, message: typing.Any) -> typing.Any:
        self.completed.append((message.object_id, self._joined.pop(0)))
        return message

    def reassemble(self, blob: bytes) -> typing.List[typing.Tuple[int, bytes]]:
        _check_fragment_lengths(blob)
        original = psrp_base.unpack_message

        def capture(data: bytearray) -> typing.Any:
            self._joined.append(bytes(data))
            return original(data)

        psrp_base.unpack_message = capture  # type: ignore[assignment]
        try:
            self.receive_data(PSRPPayload(blob, StreamType.default, None))
            while self.next_event() is not None:
                pass
        finally:
            psrp_base.unpack_message = original  # type: ignore[assignment]
        if self._incoming_fragments:
            pending = sorted(self._incoming_fragments)
            raise XCheckError("fragments", f"incomplete object(s) {pending}: no end fragment")
        return self.completed


def _check_fragment_lengths(blob: bytes) -> None:
    """psrpcore trusts each fragment's length field; refuse blobs that lie."""
    at = 0
    while at < len(blob):
        if len(blob) - at < 21:
            raise XCheckError("fragments", f"truncated fragment header at byte {at}")
        length = int.from_bytes(blob[at + 17 : at + 21], "big")
        if len(blob) - at - 21 < length:
            raise XCheckError("fragments", f"truncated fragment at byte {at}: {length} bytes announced")
        at += 21 + length


def decode_fragments(blob: bytes) -> typing.List[typing.Dict[str, typing.Any]]:
    try:
        completed = _Reassembler().reassemble(blob)
    except XCheckError:
        raise
    except Exception as e:
        raise XCheckError("fragments", _describe(e)) from e
    messages: typing.List[typing.Dict[str, typing.Any]] = []
    for object_id, raw in completed:
        try:
            messages.append({"object_id": object_id, **decode_message(raw)})
        except XCheckError as e:
            messages.append({"object_id": object_id, "error": str(e), "stage": e.stage})
    return messages


# --------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------


def _emit(obj: typing.Dict[str, typing.Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _run_lines(key: str, handle: typing.Callable[[bytes], typing.Dict[str, typing.Any]]) -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        line_id: typing.Any = None
        try:
            try:
                request = json.loads(line)
                line_id = request.get("id")
                payload = base64.b64decode(request[key], validate=True)
            except Exception as e:
                raise XCheckError("input", _describe(e)) from e
            result = handle(payload)
            _emit({"id": line_id, **result})
        except XCheckError as e:
            _emit({"id": line_id, "error": str(e), "stage": e.stage})
        except Exception as e:  # a psrpcore or script bug: report it, keep going
            _emit({"id": line_id, "error": _describe(e), "stage": "internal", "trace": traceback.format_exc()})
    return 0


def mode_decode(args: argparse.Namespace) -> int:
    return _run_lines("message", decode_message)


def mode_fragments(args: argparse.Namespace) -> int:
    return _run_lines("fragments", lambda blob: {"messages": decode_fragments(blob)})


# The scripted server conversation -------------------------------------------------------

RPID = uuid.UUID("3a0f6b4e-9c1d-4e2f-8a7b-1c2d3e4f5a6b")
PIPELINE_IDS = [
    uuid.UUID("11111111-2222-4333-8444-555555555501"),
    uuid.UUID("11111111-2222-4333-8444-555555555502"),
    uuid.UUID("11111111-2222-4333-8444-555555555503"),
]
FIXED_TIME = PSDateTime(2024, 3, 5, 7, 9, 11, 123456, tzinfo=datetime.timezone.utc, nanosecond=700)


@PSType(
    ["PSFleet.XCheck.Sample"],  # PSType appends the base class's System.Object
    adapted_properties=[
        PSNoteProperty("Id", ps_type=PSInt),
        PSNoteProperty("Label", ps_type=PSString),
    ],
    rehydrate=False,
)
class _Sample(PSObject):
    """A .NET-like object with adapted properties (serialized under <Props>)."""


def _sample_outputs() -> typing.List[typing.Any]:
    """One PIPELINE_OUTPUT per value: every CLIXML primitive and object shape."""
    nested = PSCustomObject(Inner="deep", Number=PSInt(7))
    shared = _Sample(Id=1, Label="shared")
    custom = PSCustomObject(
        Name="outer",
        Nested=nested,
        Items=[shared, shared],  # the second occurrence serializes as <Ref>
        Empty="",
    )
    add_note_property(custom, "Extra_x", "note")  # a property name that needs _x escaping

    extended_string = PSString("extended")
    add_note_property(extended_string, "Note", PSInt(1))  # <Obj><S>..</S><MS>..</MS></Obj>

    versions = PSList([PSVersion("1.0"), PSVersion("2.0")])
    versions.PSObject.type_names = ["System.Version[]", "System.Array", "System.Object"]

    hashtable = PSDict()
    hashtable["alpha"] = PSInt(1)
    hashtable["beta"] = [PSString("x"), None]
    hashtable[PSInt(3)] = PSString("int key")

    queue = PSQueue()
    queue.put(PSInt(1))
    queue.put(PSString("q"))

    local = PSDateTime(2021, 12, 31, 23, 59, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=10)))

    return [
        "plain",
        "line1\nline2\r\nCR\rtab\t_x0041_ _X00 <&>\"' \u00e9 \U0001F600 \u2603 \x00\x1f\x7f",
        "",
        PSSByte(-128),
        PSByte(255),
        PSInt16(-32768),
        PSUInt16(65535),
        PSInt(-2147483648),
        PSUInt(4294967295),
        PSInt64(-9223372036854775808),
        PSUInt64(18446744073709551615),
        True,
        False,
        PSDouble(0.1),
        PSDouble(-1.5e300),
        PSDouble(float("inf")),
        PSDouble(float("nan")),
        PSSingle(1.25),
        PSDecimal("79228162514264337593543950335"),
        PSDecimal("-1.50"),
        FIXED_TIME,
        local,
        PSDuration(days=1, hours=2, minutes=3, seconds=4, microseconds=500000),
        PSDuration(seconds=-75, microseconds=-250000),
        PSGuid("0e6bb5c0-5f3c-4b9e-9d9f-5ad1b8f1e2a3"),
        b"\x00\x01\x02binary\xff",
        PSVersion("10.0.17763.1"),
        PSChar("A"),
        PSUri("http://example.invalid/path?q=1"),
        PSXml("<root><child>x</child></root>"),
        PSScriptBlock("Get-ChildItem | Where-Object { $_.Length -gt 0 }"),
        None,  # psrpcore sends an empty PIPELINE_OUTPUT
        [PSInt(1), None, "two", [PSInt(3)]],
        versions,
        hashtable,
        PSStack([PSInt(1), PSInt(2)]),
        queue,
        PSIEnumerable([PSString("ie")]),
        custom,
        _Sample(Id=42, Label="adapted"),
        extended_string,
        ConsoleColor.DarkRed,
        RemoteStreamOptions.AddInvocationInfo,
        ErrorCategory.InvalidArgument,
    ]


def _runtime_exception(message: str) -> NETException:
    exception = NETException(Message=message, HResult=-2146233087)
    exception.PSObject.type_names = [
        "System.Management.Automation.RuntimeException",
        "System.SystemException",
        "System.Exception",
        "System.Object",
    ]
    return exception


def _invocation_info() -> InvocationInfo:
    return InvocationInfo(
        BoundParameters=PSDict(),
        CommandOrigin=CommandOrigin.Internal,
        DisplayScriptPosition=None,
        ExpectingInput=False,
        HistoryId=1,
        InvocationName="Get-XCheckSample",
        Line="Get-XCheckSample -Name value",
        MyCommand=PSCustomObject(
            CommandType=CommandTypes.Cmdlet,
            Name="Get-XCheckSample",
            Definition="Get-XCheckSample [-Name <string>]",
        ),
        OffsetInLine=1,
        PipelineLength=1,
        PipelinePosition=1,
        PositionMessage="At line:1 char:1",
        PSCommandPath="",
        PSScriptRoot="",
        ScriptLineNumber=1,
        ScriptName="",
        UnboundArguments=PSList(),
    )


class _Conversation:
    """Drives psrpcore's server against its client and records what the server sends."""

    def __init__(self, amount: int) -> None:
        self.amount = amount
        self.lines: typing.List[typing.Dict[str, typing.Any]] = []
        self.server_messages: typing.List[bytes] = []
        self.client_messages: typing.List[bytes] = []
        self.fragment_blobs: typing.List[bytes] = []

    def run(self) -> None:
        original = psrp_base.create_message

        def capture(client: bool, *args: typing.Any, **kwargs: typing.Any) -> bytes:
            raw = original(client, *args, **kwargs)
            (self.client_messages if client else self.server_messages).append(raw)
            return raw

        psrp_base.create_message = capture  # type: ignore[assignment]
        try:
            self._script()
        finally:
            psrp_base.create_message = original  # type: ignore[assignment]

    def _pump(self, source: typing.Any, target: typing.Any, server_side: bool) -> typing.List[typing.Any]:
        events = []
        while (payload := source.data_to_send(self.amount if server_side else None)) is not None:
            if server_side:
                self.fragment_blobs.append(payload.data)
                self.lines.append(
                    {
                        "kind": "fragments",
                        "fragments": base64.b64encode(payload.data).decode(),
                        "object_ids": _object_ids(payload.data),
                        "pipeline_id": None if payload.pipeline_id is None else str(payload.pipeline_id),
                    }
                )
            target.receive_data(payload)
            while (event := target.next_event()) is not None:
                events.append(event)
        return events

    def _script(self) -> None:
        version_table = PSPrimitiveDictionary()
        version_table["PSVersion"] = PSVersion("5.1.17763.1")
        version_table["PSEdition"] = "Desktop"
        compatible = PSList([PSVersion("1.0"), PSVersion("2.0"), PSVersion("5.1.17763.1")])
        compatible.PSObject.type_names = ["System.Version[]", "System.Array", "System.Object"]
        version_table["PSCompatibleVersions"] = compatible
        version_table["CLRVersion"] = PSVersion("4.0.30319.42000")
        version_table["BuildVersion"] = PSVersion("10.0.17763.1")
        version_table["WSManStackVersion"] = PSVersion("3.0")
        version_table["PSRemotingProtocolVersion"] = PSVersion("2.3")
        version_table["SerializationVersion"] = PSVersion("1.1.0.1")
        app_data = PSPrimitiveDictionary()
        app_data["PSVersionTable"] = version_table

        client = psrpcore.ClientRunspacePool(runspace_pool_id=RPID)
        server = psrpcore.ServerRunspacePool(application_private_data=app_data)

        # Pool open: SESSION_CAPABILITY + INIT_RUNSPACEPOOL in, three messages out.
        client.open()
        self._pump(client, server, False)
        self._pump(server, client, True)
        _expect(client.state == psrpcore.types.RunspacePoolState.Opened, "client pool did not open")

        # Pipeline 1: every output kind and every record stream, then Completed.
        pipe = self._start_pipeline(client, server, PIPELINE_IDS[0])
        for value in _sample_outputs():
            pipe.write_output(value)
        pipe.write_error(
            exception=_runtime_exception("Something went wrong: \u00e9"),
            category_info=ErrorCategoryInfo(
                Category=ErrorCategory.InvalidArgument,
                Activity="Get-XCheckSample",
                Reason="ArgumentException",
                TargetName="target",
                TargetType="String",
            ),
            target_object="target",
            fully_qualified_error_id="XCheck.InvalidArgument,Get-XCheckSample",
            error_details=ErrorDetails(Message="Friendly details", RecommendedAction="Try again"),
            invocation_info=_invocation_info(),
            pipeline_iteration_info=[PSInt(0), PSInt(1)],
            script_stack_trace="at <ScriptBlock>, <No file>: line 1",
        )
        pipe.write_warning("warning message")
        pipe.write_verbose(
            "verbose message\nsecond line",
            invocation_info=_invocation_info(),
            pipeline_iteration_info=[PSInt(0)],
        )
        pipe.write_debug("debug message")
        pipe.write_information(
            "information message",
            "Write-Information",
            time_generated=FIXED_TIME,
            tags=["tag1", "tag 2"],
            user="XCHECK\\user",
            computer="XCHECK-HOST",
            process_id=4242,
            native_thread_id=1234,
            managed_thread_id=9,
        )
        pipe.write_progress(
            "Activity", 1, "Half way", current_operation="step 1", percent_complete=50, seconds_remaining=10
        )
        pipe.write_progress("Activity", 1, "Done", record_type=ProgressRecordType.Completed)
        pipe.complete()
        self._pump(server, client, True)

        # Pipeline 2: terminating error. psrpcore has no public "fail" on ServerPipeline;
        # its _change_state(Failed, error) is what stop() uses for Stopped.
        pipe = self._start_pipeline(client, server, PIPELINE_IDS[1])
        pipe.write_output("before the failure")
        failure = ErrorRecord(
            Exception=_runtime_exception("Terminating failure"),
            CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.OperationStopped, Reason="RuntimeException"),
            TargetObject=None,
            FullyQualifiedErrorId="XCheck.Terminating",
        )
        pipe._change_state(PSInvocationState.Failed, error=failure)
        self._pump(server, client, True)

        # Pipeline 3: stopped, with psrpcore's PipelineStopped error record.
        pipe = self._start_pipeline(client, server, PIPELINE_IDS[2])
        pipe.stop()
        self._pump(server, client, True)

        # The pool breaks.
        server.set_broken(
            ErrorRecord(
                Exception=_runtime_exception("The runspace pool is broken."),
                CategoryInfo=ErrorCategoryInfo(
                    Category=ErrorCategory.ResourceUnavailable, Reason="PSRemotingTransportException"
                ),
                FullyQualifiedErrorId="XCheck.Broken",
            )
        )
        self._pump(server, client, True)
        _expect(client.state == psrpcore.types.RunspacePoolState.Broken, "client pool did not break")

    def _start_pipeline(self, client: typing.Any, server: typing.Any, pipeline_id: uuid.UUID) -> typing.Any:
        ps = psrpcore.ClientPowerShell(client, pipeline_id=pipeline_id)
        ps.add_script("Get-XCheckSample").add_parameter("Name", "value").add_argument(PSInt(42))
        ps.start()
        server_pipe = psrpcore.ServerPipeline(server, pipeline_id)
        events = self._pump(client, server, False)
        _expect(any(isinstance(e, psrpcore.CreatePipelineEvent) for e in events), "no CreatePipelineEvent")
        server_pipe.start()
        return server_pipe


def _object_ids(blob: bytes) -> typing.List[int]:
    ids: typing.List[int] = []
    at = 0
    while at < len(blob):
        fragment = unpack_fragment(bytearray(blob[at:]))
        if fragment.object_id not in ids:
            ids.append(fragment.object_id)
        at += 21 + len(fragment.data)
    return ids


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"server conversation: {message}")


def mode_server(args: argparse.Namespace) -> int:
    conversation = _Conversation(args.amount)
    conversation.run()

    # Self-check: psrpcore's reassembly of its own fragments gives the captured messages.
    reassembled = _Reassembler().reassemble(b"".join(conversation.fragment_blobs))
    if [raw for _, raw in reassembled] != conversation.server_messages:
        print("server: reassembled fragments differ from the messages sent", file=sys.stderr)
        return 1
    if [oid for oid, _ in reassembled] != list(range(1, len(reassembled) + 1)):
        print("server: object ids do not count from 1", file=sys.stderr)
        return 1

    for object_id, raw in enumerate(conversation.server_messages, start=1):
        encoded = base64.b64encode(raw).decode()
        _emit({"kind": "message", "message": encoded, "object_id": object_id, **decode_message(raw)})
    for line in conversation.lines:
        _emit(line)
    if args.include_client:
        for object_id, raw in enumerate(conversation.client_messages, start=1):
            _emit(
                {
                    "kind": "client_message",
                    "message": base64.b64encode(raw).decode(),
                    "object_id": object_id,
                    **decode_message(raw),
                }
            )
    return 0


def main(argv: typing.Optional[typing.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("decode", help="decode complete PSRP messages (JSON lines on stdin)")
    sub.add_parser("fragments", help="reassemble and decode fragment blobs (JSON lines on stdin)")
    server = sub.add_parser("server", help="print psrpcore's scripted server conversation")
    server.add_argument("--amount", type=int, default=400, help="fragment payload budget (>= 22)")
    server.add_argument("--include-client", action="store_true", help="also print client->server messages")
    args = parser.parse_args(argv)
    if args.mode == "server" and args.amount < 22:
        parser.error("--amount must be at least 22")
    return {"decode": mode_decode, "fragments": mode_fragments, "server": mode_server}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())

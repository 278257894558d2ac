"""
The client's function tools, offered to the model as the tools of an MCP
server that the proxy serves to the CLI over its stream-json control channel
(an "sdk" server: no process, no port). The model sees them as
`mcp__client__<name>` with the client's JSON Schema unchanged; the client sees
its own names. Nothing here executes a tool: calls end the run before the CLI
would. Pure.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from attrs import frozen

from claude_proxy.errors import bad_request

SERVER = "client"
PREFIX = f"mcp__{SERVER}__"
# The MCP protocol version CLI 2.1.330 asks for; with it the CLI takes the
# tool list from the initialize request and skips the handshake round trips.
MCP_PROTOCOL_VERSION = "2025-11-25"
INITIALIZE_ID = "proxy-initialize"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_OK = re.compile(r"[A-Za-z0-9_-]{1,128}")


@frozen
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def mcp(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.parameters}


@frozen
class ToolChoice:
    mode: str = "auto"  # "auto", "none", "required" or "function"
    name: str | None = None

    def instruction(self) -> str | None:
        """What the system prompt says, since the CLI has no tool_choice of its own."""
        if self.mode == "none":
            return "Do not call any tool in this reply; answer in text."
        if self.mode == "required":
            return "You must call at least one of the provided tools in this reply."
        if self.mode == "function":
            return f"You must call the tool {model_tool_name(self.name or '')} in this reply."
        return None


def model_tool_name(name: str) -> str:
    return PREFIX + name


def client_tool_name(name: str) -> str | None:
    """The client's name of a tool the model called, or None for a tool not the client's."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else None


def anthropic_tool_id(call_id: str) -> str:
    """A client's tool-call id in a form the API accepts, the same for both ends of a pair."""
    if _ID_OK.fullmatch(call_id):
        return call_id
    # A digest of the original keeps two ids that clean up alike ("call.1", "call_1") apart.
    digest = hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:12]
    return re.sub(r"[^A-Za-z0-9_-]", "_", call_id)[:100] + "_" + digest


def openai_call_id(tool_use_id: str) -> str:
    # Letters and digits only: OpenClaw strips everything else from ids it sends back.
    return "call" + re.sub(r"[^A-Za-z0-9]", "", tool_use_id)


def _schema(function: dict, where: str) -> dict[str, Any]:
    schema = function.get("parameters")
    if schema is None:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise bad_request(f"{where}.parameters must be a JSON Schema object.", f"{where}.parameters")
    # MCP requires an object schema; clients often leave "type" out.
    return schema if "type" in schema else {"type": "object", **schema}


def parse_tools(tools: object) -> tuple[Tool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise bad_request("tools must be a list.", "tools")
    parsed: dict[str, Tool] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise bad_request(f"{where}: only tools of type 'function' are supported.", where)
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"{where}.function must be an object.", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise bad_request(f"{where}.function.name must match ^[A-Za-z0-9_-]{{1,64}}$.",
                              f"{where}.function.name")
        if name in parsed:
            raise bad_request(f"{where}: the tool name {name!r} is given twice.", where)
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise bad_request(f"{where}.function.description must be a string.",
                              f"{where}.function.description")
        parsed[name] = Tool(name, description, _schema(function, f"{where}.function"))
    return tuple(parsed.values())


def parse_tool_choice(value: object, tools: tuple[Tool, ...]) -> ToolChoice:
    if value is None or value == "auto":
        return ToolChoice()
    if value in ("none", "required"):
        return ToolChoice(str(value))
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise bad_request(f"tool_choice names {name!r}, which is not in tools.", "tool_choice")
        return ToolChoice("function", name)
    raise bad_request("tool_choice must be 'none', 'auto', 'required' or a named function.",
                      "tool_choice")


def initialize_request(tools: tuple[Tool, ...]) -> dict[str, Any]:
    """
    The control request that registers the tools' MCP server with the CLI;
    without tools, a bare one (a readiness probe for a pre-started process).
    """
    if not tools:
        return {"type": "control_request", "request_id": INITIALIZE_ID,
                "request": {"subtype": "initialize"}}
    return {
        "type": "control_request",
        "request_id": INITIALIZE_ID,
        "request": {
            "subtype": "initialize",
            "sdkMcpServers": [SERVER],
            "sdkMcpServerManifests": {SERVER: {
                "initializeResult": _initialize_result(MCP_PROTOCOL_VERSION),
                "toolsListResult": {"tools": [t.mcp() for t in tools]},
            }},
        },
    }


def _initialize_result(version: str) -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {"tools": {}},
            "serverInfo": {"name": "claude-proxy", "version": "1"}}


def mcp_answer(tools: tuple[Tool, ...], message: dict[str, Any]) -> dict[str, Any]:
    """
    The JSON-RPC answer of the tools' MCP server. A tools/call is refused: the
    proxy never runs a tool, it hands the call to the client.
    """
    method = message.get("method")
    msg_id = message.get("id")
    if method == "initialize":
        params = message.get("params")
        version = params.get("protocolVersion") if isinstance(params, dict) else None
        result: dict[str, Any] = _initialize_result(version or MCP_PROTOCOL_VERSION)
    elif method == "tools/list":
        result = {"tools": [t.mcp() for t in tools]}
    elif method == "tools/call":
        result = {"isError": True, "content": [
            {"type": "text", "text": "This tool runs on the client, not here."}]}
    elif msg_id is None:  # a notification
        return {"jsonrpc": "2.0", "result": {}}
    else:
        return {"jsonrpc": "2.0", "id": msg_id,
                "error": {"code": -32601, "message": f"Method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}

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


def make_tool(name: object, description: object, schema: object, where: str,
              schema_key: str = "parameters") -> Tool:
    """
    A client tool, checked: `where` names the object holding its name,
    description and schema (`schema_key`) in errors, e.g. "tools[0].function".
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise bad_request(f"{where}.name must match ^[A-Za-z0-9_-]{{1,64}}$.", f"{where}.name")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise bad_request(f"{where}.description must be a string.", f"{where}.description")
    if schema is None:
        schema = {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise bad_request(f"{where}.{schema_key} must be a JSON Schema object.",
                          f"{where}.{schema_key}")
    # MCP requires an object schema; clients often leave "type" out.
    return Tool(name, description, schema if "type" in schema else {"type": "object", **schema})


def unique_tools(tools: list[tuple[str, Tool]]) -> tuple[Tool, ...]:
    """The tools of a request, each with where it was given; a name given twice is a 400."""
    seen: dict[str, Tool] = {}
    for where, tool in tools:
        if tool.name in seen:
            raise bad_request(f"{where}: the tool name {tool.name!r} is given twice.", where)
        seen[tool.name] = tool
    return tuple(seen.values())


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

// The JSON-RPC 2.0 envelope, for the agent's POST /v1/rpc and the
// master's /api/rpc socket.

// rpcRequest is the body of a call.
export function rpcRequest(id, method, params) {
  return JSON.stringify({ jsonrpc: "2.0", id, method, params });
}

// rpcResult returns a response's result, or throws its error prefixed by
// the method.
export function rpcResult(method, msg) {
  if (msg.error) throw new Error(`${method}: ${msg.error.message}`);
  return msg.result;
}

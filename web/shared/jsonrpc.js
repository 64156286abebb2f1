// The JSON-RPC 2.0 envelope, for the agent's POST /v1/rpc and the
// master's /api/rpc socket.

// rpcRequest is the body of a call.
export function rpcRequest(id, method, params) {
  return JSON.stringify({ jsonrpc: "2.0", id, method, params });
}

// RPCError is a JSON-RPC error answer: the server understood the call and
// refused it (code, message), as opposed to a call that did not get
// through.
export class RPCError extends Error {
  constructor(method, error) {
    super(`${method}: ${error.message}`);
    this.code = error.code;
  }
}

// rpcResult returns a response's result, or throws its error (an
// RPCError, its message prefixed by the method).
export function rpcResult(method, msg) {
  if (msg.error) throw new RPCError(method, msg.error);
  return msg.result;
}

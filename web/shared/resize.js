// resizeQueue returns resize(size), which sends sizes one at a time with
// send (a process.resize call): a size asked for while a call is under way
// waits, and replaces any other waiting size, so the last size wins and
// calls never overtake one another. Nothing more is sent once stopped()
// is true (the attach socket has closed). A failed call is logged.
export function resizeQueue(send, stopped) {
  let pending = null;
  let sending = false;
  return async function resize(size) {
    pending = size;
    if (sending) return;
    sending = true;
    while (pending && !stopped()) {
      const next = pending;
      pending = null;
      try {
        await send(next);
      } catch (e) {
        console.warn(e);
      }
    }
    sending = false;
  };
}

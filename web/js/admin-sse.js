// The admin console's live tail: Server-Sent Events read with fetch() and a
// stream reader, so that the admin key travels in the X-Admin-Key header.
//
// Why not EventSource: it cannot send headers, so the key (or a token
// minted from it) would have to go in the URL, and URLs end up in proxy and
// access logs and in the browser's history. A key that reads every tenant's
// and every private topic is not one to leave there. The price is doing
// EventSource's work here: parsing the frames (the WHATWG rules: `field:
// value` lines, a blank line ends an event, `:` lines are comments) and
// reconnecting after the server's `retry:` with the last id seen as
// `Last-Event-ID`, which pollcast answers with exactly what was missed.

/**
 * Follows `url` until `signal` aborts. Calls `onEvent({id, type, data})`
 * for each event and `onState(state, detail)` with `connecting`, `live`,
 * `reconnecting` or `refused` (a 4xx: the key is wrong or the filter bad;
 * it does not retry then, as EventSource does not).
 */
export async function followTail(url, { key, signal, onEvent, onState }) {
  let lastEventId = null;
  let retry = 2000;
  let first = true;
  while (!signal.aborted) {
    onState(first ? 'connecting' : 'reconnecting');
    first = false;
    try {
      const headers = { 'x-admin-key': key, accept: 'text/event-stream' };
      if (lastEventId) headers['last-event-id'] = lastEventId;
      const response = await fetch(url, { headers, signal, cache: 'no-store' });
      if (response.status >= 400 && response.status < 500) {
        let message = `HTTP ${response.status}`;
        try {
          message = (await response.json()).error.message;
        } catch { /* not the JSON error body */ }
        onState('refused', { status: response.status, message });
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let event = { id: null, type: 'message', data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === '') {
            if (event.data.length > 0) {
              if (event.id !== null) lastEventId = event.id;
              if (event.type.startsWith('connection:')) onState('live');
              onEvent({ id: event.id, type: event.type, data: event.data.join('\n') });
            }
            event = { id: null, type: 'message', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? '' : line.slice(colon + 1);
          if (text.startsWith(' ')) text = text.slice(1);
          if (field === 'data') event.data.push(text);
          else if (field === 'event') event.type = text;
          else if (field === 'id' && !text.includes('\0')) event.id = text;
          else if (field === 'retry' && /^\d+$/.test(text)) retry = Number(text);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    if (signal.aborted) return;
    onState('reconnecting');
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, retry);
      signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
}

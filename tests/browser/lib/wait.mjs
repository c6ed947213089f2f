// Waiting in the browser tests: a pause, and a check retried until it
// holds (pages update after their streams deliver, never at once).

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retries `check` (which throws while not yet true) until it passes or `timeout` ends. */
export async function eventually(check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(150);
    }
  }
}

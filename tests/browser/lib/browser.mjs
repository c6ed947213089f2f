// Debian's Chromium driven by playwright-core (Playwright's own browser
// download is not available here). The flags keep Chromium from reaching
// for Google's services, which this machine's closed network refuses, and
// let it run as root in a container.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

export async function launchChromium() {
  const profile = mkdtempSync(path.join(tmpdir(), 'pollcast-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1200, height: 860 },
    // Bars jump to their final width instead of sliding: what is on screen
    // (and in the screenshots) is the final state.
    reducedMotion: 'reduce',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

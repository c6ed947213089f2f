// The landing page: create a session (then present it) or go to a join code.

import { api, presenterStore, normalizeCode } from './api.js';

const createForm = document.getElementById('create-form');
const createError = createForm.querySelector('[data-testid="create-error"]');
const joinForm = document.getElementById('join-form');
const joinError = joinForm.querySelector('[data-testid="home-join-error"]');

function fail(el, message) {
  el.textContent = message;
  el.hidden = false;
}

createForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  createError.hidden = true;
  const title = createForm.elements.title.value.trim();
  if (!title) return fail(createError, 'Give the session a title.');
  const button = createForm.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const session = await api.createSession(title, createForm.elements.adminKey.value.trim() || undefined);
    // Kept in localStorage: any tab of this browser can present it, and the
    // presenter page offers the link that opens it in another browser.
    presenterStore.save(session.sessionId, session.presenterToken);
    location.assign(`/present?session=${encodeURIComponent(session.sessionId)}`);
  } catch (error) {
    if (error.status === 401) createForm.querySelector('details').open = true;
    fail(createError, error.status === 401 ? 'This server needs its admin key to create sessions.' : error.message);
    button.disabled = false;
  }
});

joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const code = normalizeCode(joinForm.elements.code.value);
  if (!code) return fail(joinError, 'Enter the join code.');
  location.assign(`/join?code=${encodeURIComponent(code)}`);
});

// Where the page's token comes from: a dev gateway's link (#token=…), this tab's storage, or
// the person, through the token form. The client asks for one through its getToken hook.

const KEY = "chat-gateway.token";
const SOON_MS = 5 * 60_000;

/**
 * The token to start with. A link's #token= is moved into sessionStorage and taken out of the
 * address bar: the fragment never reaches a server, but it would stay in the history, in
 * bookmarks and in screenshots. sessionStorage keeps it for this tab only, across reloads.
 */
export function startingToken() {
  const match = location.hash.match(/[#&]token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(KEY, decodeURIComponent(match[1]));
    history.replaceState(history.state, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY);
}

/** When the token expires (ms), read without checking it: only to word the prompt. */
function expiresAt(token) {
  try {
    const payload = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null; // not a JWT we can read; the gateway will say what it thinks of it
  }
}

/**
 * The token form, as the client's getToken hook: a token the form already has is handed over
 * at once; otherwise the form is shown and the hook waits until a token is pasted.
 */
export class TokenPrompt {
  /**
   * @param {{form: HTMLFormElement, input: HTMLInputElement, hint: HTMLElement}} ui
   * @param {{onShow: () => void, onHide: () => void, onToken: () => void}} hooks
   */
  constructor(ui, hooks) {
    this.ui = ui;
    this.hooks = hooks;
    this.token = startingToken();
    this._defaultHint = ui.hint.textContent.trim();
    /** @type {((token: string) => void) | null} */
    this._resolve = null;
    /** @type {string | null} */
    this._queued = null;
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this._submit();
    });
  }

  /** For ChatGatewayClient's getToken: called with no token, before expiry, after a refusal. */
  getToken = () => {
    if (this._queued) {
      const token = this._queued;
      this._queued = null;
      return token;
    }
    this.ask();
    return new Promise((resolve) => {
      this._resolve = resolve;
    });
  };

  /** Shows the form, saying why a token is needed. */
  ask() {
    this.show(this._reason());
  }

  /** Shows the form with a sentence saying why. */
  show(hint) {
    this.ui.hint.textContent = hint || this._defaultHint;
    this.ui.form.hidden = false;
    this.hooks.onShow();
    this.ui.input.focus();
  }

  _reason() {
    if (!this.token) return null;
    const expires = expiresAt(this.token);
    if (expires !== null && expires - Date.now() < SOON_MS) {
      return expires <= Date.now()
        ? "The token has expired. Paste a new one to continue."
        : "The token expires in a few minutes. Paste a new one to stay signed in.";
    }
    // Not about to expire, so it was refused: a reload must not try it again.
    sessionStorage.removeItem(KEY);
    return "The gateway refused the token. Paste another one to continue.";
  }

  _submit() {
    const token = this.ui.input.value.trim();
    if (!token) return;
    this.ui.input.value = "";
    this.token = token;
    sessionStorage.setItem(KEY, token);
    this.ui.form.hidden = true;
    this.hooks.onHide();
    if (this._resolve) {
      this._resolve(token);
      this._resolve = null;
    } else {
      // Nobody is waiting: the client gave up (closed). It gets this token when it next asks.
      this._queued = token;
      this.hooks.onToken();
    }
  }
}

// A minimal event emitter that works the same in browsers and Node.js.
// A listener that throws must not break the client's state machine: the
// exception goes to onListenerError (the client reports it as "error").

export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Add a listener; returns this (chainable). */
  on(name, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    let list = this._listeners.get(name);
    if (!list) {
      list = [];
      this._listeners.set(name, list);
    }
    list.push(fn);
    return this;
  }

  /** Remove a listener added with on(); without fn, all of that event. */
  off(name, fn) {
    const list = this._listeners.get(name);
    if (!list) return this;
    if (fn === undefined) {
      this._listeners.delete(name);
      return this;
    }
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this._listeners.delete(name);
    return this;
  }

  _emit(name, ...args) {
    const list = this._listeners.get(name);
    if (!list) return false;
    for (const fn of list.slice()) {
      try {
        fn(...args);
      } catch (e) {
        this._onListenerError(name, e);
      }
    }
    return true;
  }

  _onListenerError(name, e) {
    // Last resort: never swallow a listener's bug silently.
    setTimeout(() => {
      throw e;
    }, 0);
  }
}

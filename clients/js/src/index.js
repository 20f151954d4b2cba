// herald-client: the JavaScript client SDK of herald (browsers and Node.js 18+).
export { HeraldClient, Subscription, HeraldError } from "./client.js";
export { PROFILES, closeAction, backoffDelay } from "./policy.js";

export { ApiKeys, MIN_API_KEY_LENGTH, type ApiKeySources } from './ApiKeys';
export { AUTH_EXEMPT_PREFIXES, bearerAuthMiddleware } from './bearerAuthMiddleware';

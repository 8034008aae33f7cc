export { backendCredentials, type BackendCredentials } from './backendCredentials';
export { serverCredentials } from './serverCredentials';
export { transportSettings, type BackendTlsSettings, type ServerTlsSettings, type TransportSettings } from './transportSettings';

/** GenerateRequest.max_tokens when absent (the contract's default, proto/moeflash/v1/generation.proto). */
export const DEFAULT_MAX_TOKENS = 256;

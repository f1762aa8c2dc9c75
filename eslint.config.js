import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      '**/generated/**',
      '**/node_modules/**',
      '**/.tsbuild/**',
      '**/*.d.ts',
      '**/guest/**',
      '**/build/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
    },
  },
  {
    // Engines and examples see only @hcr/core's public entry points, like any third-party plugin.
    files: ['packages/engine-*/**/*.ts', 'examples/**/*.ts', 'packages/cri/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@hcr/core/*', '!@hcr/core/testing'], message: 'import @hcr/core or @hcr/core/testing only' },
            { group: ['**/core/src/**', '../../core/**'], message: 'import @hcr/core, not its sources' },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly' } },
  },
);

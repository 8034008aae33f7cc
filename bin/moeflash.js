#!/usr/bin/env node
// The moeflash command line; the TypeScript sources are compiled to dist/ by `npm install` (npm run build).
'use strict';
const { join } = require('node:path');
require(join(__dirname, '..', 'dist', 'cli', 'main.js')).main(process.argv.slice(2));

// Runs the CLI from source in a child process, exactly as bin/matrix-compat-proxy.js runs the compiled one.
import { main } from '../../src/main.js';

process.exit(await main(process.argv.slice(2)));

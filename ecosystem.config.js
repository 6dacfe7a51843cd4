// PM2 process file for temporal-build-worker: `pm2 start ecosystem.config.js` from any directory.
// Paths are relative to this file, so every checkout runs its own worker with its own `.venv`
// (`make venv` creates it). Settings come from the environment `pm2 start` is run in, plus `env`
// below; after changing them use `pm2 restart ecosystem.config.js --update-env`.
const path = require('path');

// What both apps share: this checkout's venv Python, restarts with a growing delay, PM2's dates.
// A crash is restarted after 500 ms, then 750, 1125, ... up to 15 s between tries; the delay
// starts again from 500 ms once the app has stayed up for 30 s. PM2 counts a restart as unstable
// (towards max_restarts) only within min_uptime * max_restarts = 10 s of the start, where this
// backoff leaves room for at most 6, so an outage at boot (Temporal or Vault down) is retried
// every 15 s until it ends instead of leaving the app `errored`.
const python = (script) => ({
  script,
  interpreter: path.join(__dirname, '.venv', 'bin', 'python'),
  cwd: __dirname,
  autorestart: true,
  watch: false,
  exp_backoff_restart_delay: 500,
  max_restarts: 10,
  log_date_format: 'YYYY-MM-DD HH:mm:ss Z',
});

// The agent runner (agent_runner.py) is a second app, started only when AGENT_COMMANDS_FILE is
// set in the environment of `pm2 start`: without it the runner has nothing to run, and PM2 would
// restart it until it gave up.
const runner = {
  ...python('agent_runner.py'),
  name: 'temporal-build-agent-runner',
  // PM2 stops with SIGINT: the runner gives each running agent SIGTERM, then SIGKILL after
  // AGENT_RUNNER_KILL_GRACE_SECONDS (10 s), then tells its stage; 30 s covers both. The runner
  // stops its agents' process groups itself, so PM2 must not signal them behind its back.
  kill_timeout: 30000,
  treekill: false,
  env: {
    PYTHONUNBUFFERED: '1',
  },
};

module.exports = {
  apps: [
    {
      ...python('worker.py'),
      name: 'temporal-build-worker',
      // PM2 stops with SIGINT and sends SIGKILL after kill_timeout. The worker drains for up to
      // worker.GRACEFUL_SHUTDOWN (10 s) and then closes its client, so give it 15 s.
      kill_timeout: 15000,
      env: {
        PYTHONUNBUFFERED: '1',
        MATRIX_ROOM: 'sysadmin',
        // Notifications through the Matrix API instead of send-matrix.sh:
        //   MATRIX_HOMESERVER: 'https://matrix.example.org',
        //   MATRIX_ACCESS_TOKEN_FILE: '/path/to/matrix-token',   (chmod 600, not in git)
        // mTLS to Temporal with certificates from Vault (AppRole). The role_id is semi-public;
        // the secret_id stays in a file readable by the worker's user only (chmod 600):
        //   VAULT_ADDR: 'https://vault.example.org:8200',
        //   VAULT_ROLE_ID: '<role id>',
        //   VAULT_SECRET_ID_FILE: '/path/to/secret-id',
        //   TEMPORAL_REQUIRE_TLS: 'true',
        // Agents on several hosts (docs/OPERATIONS.md): this host's name, and the one mapping
        // of agents to hosts that every host's worker gets:
        //   WORKER_HOST: 'alpha',
        //   AGENT_HOSTS: 'claudebox=alpha,security-agent=alpha,dispatcher=alpha,dev=beta',
      },
    },
    ...(process.env.AGENT_COMMANDS_FILE ? [runner] : []),
  ],
};

// node-postgres through Ocelot with named queries ({name, text, values}): each name is prepared once per
// connection by the driver and executed by name afterwards. Usage: node pg_check.js PORT
const { Client } = require('pg');

const port = Number(process.argv[2]);
const CLIENTS = 6, ROUNDS = 25;

async function client(n) {
  const c = new Client({ host: '127.0.0.1', port, user: 'postgres', database: 'app' });
  await c.connect();
  let checks = 0;
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const r = await c.query({ name: 'add', text: 'SELECT $1::int + $2::int AS s', values: [i, n] });
      if (r.rows[0].s !== i + n) throw new Error(`add: ${JSON.stringify(r.rows)}`);
      const e = await c.query({ name: 'echo', text: "SELECT $1::text || '!' AS e", values: [`n${n}i${i}`] });
      if (e.rows[0].e !== `n${n}i${i}!`) throw new Error(`echo: ${JSON.stringify(e.rows)}`);
      const g = await c.query({ name: 'series', text: 'SELECT count(*)::int AS c FROM generate_series(1, $1::int)', values: [i + 1] });
      if (g.rows[0].c !== i + 1) throw new Error(`series: ${JSON.stringify(g.rows)}`);
      checks += 3;
    }
  } finally {
    await c.end();
  }
  return checks;
}

Promise.all(Array.from({ length: CLIENTS }, (_, n) => client(n)))
  .then((counts) => console.log(`node-postgres: ${counts.reduce((a, b) => a + b, 0)} checks passed`))
  .catch((e) => { console.error(e); process.exit(1); });

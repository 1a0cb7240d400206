// Intentionally empty: see package.json. require('http') etc. resolve to Node's core modules first.
module.exports = {};

// Package appctl owns the life of the [app] process: starting it, keeping
// it up (a detached supervisor that restarts it with backoff and replaces it
// when the binary, the config, restart.txt or env_file change), sharing one
// instance among every copy of mysite.fcgi the web server starts, stopping it
// once no copy has used it for idle_stop, and handing the supervisor over to
// a new binary. It answers no request.
//
// The name is "app control" rather than "supervisor" because the package has
// two sides that meet in one place, the runtime directory:
//
//   - the supervisor (Supervise, supervise.go, upgrade.go): one long-lived
//     process per site, started by re-executing our own binary as
//     "mysite.fcgi _supervise --config PATH" (main.go routes that argument
//     here) and detached from the copy that started it;
//   - the client (Client, client.go): one per copy of mysite.fcgi. It
//     registers as a user of the app (a shared lock on clients.lock),
//     starts the supervisor when none runs, and tells the proxy where the
//     current ready instance listens;
//   - between them the runtime directory (RuntimeDir, runtime.go): its one
//     naming rule, its flock(2) locks and state.json, the supervisor's word
//     to the copies. deploy's check predicts the directory (RuntimeDirFor
//     the site's account) and reads the state with the same functions.
//
// # Layering
//
// Who imports whom (an arrow reads "imports"):
//
//	main (root)  -> serve -> handler -> appctl -> reload, config, internal/httpsyntax
//	main (root)  -> appctl             (the _supervise re-execution)
//	deploy       -> appctl             (RuntimeDirFor, ReadState, Alive for check)
//
// appctl imports neither handler nor serve: it knows nothing of HTTP requests
// beyond the readiness request it sends the app. handler uses only this
// small API: NewClient, Client.Ready (the current ready instance, from the
// state looked at within the last 50 ms), Client.Await (wait for one other
// than an address that just refused us), Client.Status (for the status
// page), Client.NoteHost (the site's Host for the readiness request),
// Client.Close, with Instance, UnavailableError (which handler turns into a
// 503 with Retry-After), SplitAddr and RuntimeDir (static never serves it).
//
// [app] wsgi is one more command: config turns it into the argv of the
// built-in WSGI runner (wsgirunner.py, Python 3, embedded in the binary),
// and launch writes the runner into the runtime directory before starting
// it (wsgi.go). Supervision does not know the difference.
//
// When a watched file counts as changed is decided once, by package reload:
// the supervisor watches through a reload.Watcher (supervisor.watch), the
// same rule a copy uses to restart itself.
package appctl

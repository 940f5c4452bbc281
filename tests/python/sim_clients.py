"""Independent WinRM clients (pypsrp, pywinrm) run against one simulated host.

The integration test `tests/integration/sim_interop.rs` starts simulated hosts and runs this
script once per scenario; it prints ONE JSON object on stdout, which the test asserts value
by value. Nothing here shares code with psfleet: the point is that the libraries people use
against real Windows hosts accept what the simulator sends (issue 3 item 6).

Usage:
  python sim_clients.py SCENARIO --host H --port P [--scheme http|https] [--auth A]
      [--user U] [--password-env VAR] [--ca PEM] [--encryption auto|always|never]
      [--configuration NAME] [--script TEXT] [--arg VALUE]... [--command CMD] [--count N]
      [--max-envelope BYTES] [--operation-timeout S]

The password is read from the environment variable named by --password-env (default
SIM_PASSWORD) so that it never appears in argv. Simulated host names (`srv0001.fleet.test`)
resolve through `SIM_HOSTS` (`name=address,...`), so that TLS checks the certificate against
the name as it would against a real host.

Scenarios:
  pypsrp_execute_ps   Client.execute_ps(script) -> output, had_errors, streams
  pypsrp_pool         RunspacePool + PowerShell.add_script(script).add_argument(arg)...
                      -> output (strings), state, streams
  pypsrp_shells       open up to --count RunspacePools, then close them -> how many opened
                      and the fault that stopped it, if any
  pywinrm_cmd         Session.run_cmd(command, args) -> status_code, std_out, std_err
  pywinrm_ps          Session.run_ps(script) -> status_code, std_out, std_err

Errors are reported as {"error": {"type": class name, "module": module, "code": WS-Man fault
code or null, "message": text}}; the exit status is 0 whenever the JSON was printed.
"""

import argparse
import json
import os
import socket
import sys
import traceback


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scheme", default="http", choices=["http", "https"])
    parser.add_argument("--auth", default="ntlm")
    parser.add_argument("--user", default="fleetadmin")
    parser.add_argument("--password-env", default="SIM_PASSWORD")
    parser.add_argument("--ca")
    parser.add_argument("--encryption", default="auto")
    parser.add_argument("--configuration", default="Microsoft.PowerShell")
    parser.add_argument("--script", default="")
    parser.add_argument("--arg", action="append", default=[])
    parser.add_argument("--command", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--max-envelope", type=int)
    parser.add_argument("--operation-timeout", type=int, default=20)
    args = parser.parse_args()
    args.password = os.environ.get(args.password_env, "")
    resolve_simulated_names(os.environ.get("SIM_HOSTS", ""))
    try:
        result = SCENARIOS[args.scenario](args)
    except Exception as error:  # every failure is data for the Rust test
        result = {"error": describe(error)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def resolve_simulated_names(spec):
    """Makes getaddrinfo answer the simulated names with their loopback addresses."""
    names = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if not names:
        return
    real = socket.getaddrinfo

    def getaddrinfo(host, *rest, **kwargs):
        return real(names.get(host, host), *rest, **kwargs)

    socket.getaddrinfo = getaddrinfo


def describe(error):
    code = getattr(error, "code", None)
    return {
        "type": type(error).__name__,
        "module": type(error).__module__,
        "code": code if isinstance(code, int) else None,
        "message": str(error),
        "chain": [type(e).__name__ for e in causes(error)],
        "trace": traceback.format_exception_only(type(error), error)[-1].strip(),
    }


def causes(error):
    seen = []
    while error is not None and len(seen) < 10:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


# ----- pypsrp -----


def wsman_kwargs(args):
    kwargs = dict(
        port=args.port,
        ssl=args.scheme == "https",
        auth=args.auth,
        encryption=args.encryption,
        username=args.user,
        password=args.password,
        cert_validation=args.ca if args.ca else False,
        operation_timeout=args.operation_timeout,
        read_timeout=args.operation_timeout + 10,
        connection_timeout=10,
    )
    if args.max_envelope:
        kwargs["max_envelope_size"] = args.max_envelope
    return kwargs


def wsman(args):
    from pypsrp.wsman import WSMan

    return WSMan(args.host, **wsman_kwargs(args))


def streams_of(ps_streams):
    return {
        "error": [str(e) for e in ps_streams.error],
        "error_ids": [getattr(e, "fq_error", None) for e in ps_streams.error],
        "warning": [str(w) for w in ps_streams.warning],
        "verbose": [str(v) for v in ps_streams.verbose],
        "debug": [str(d) for d in ps_streams.debug],
        "information": [str(i.message_data) for i in ps_streams.information],
        "progress": len(ps_streams.progress),
    }


def pypsrp_execute_ps(args):
    from pypsrp.client import Client

    client = Client(args.host, **wsman_kwargs(args))
    output, streams, had_errors = client.execute_ps(args.script, configuration_name=args.configuration)
    return {"output": output, "had_errors": had_errors, "streams": streams_of(streams)}


def pypsrp_pool(args):
    from pypsrp.powershell import PowerShell, RunspacePool

    with RunspacePool(wsman(args), configuration_name=args.configuration) as pool:
        ps = PowerShell(pool)
        ps.add_script(args.script)
        for value in args.arg:
            ps.add_argument(value)
        output = ps.invoke()
        return {
            "output": [str(o) for o in output],
            "state": int(ps.state),
            "had_errors": ps.had_errors,
            "streams": streams_of(ps.streams),
            "pool_state": int(pool.state),
        }


def pypsrp_shells(args):
    from pypsrp.powershell import RunspacePool

    pools = []
    stopped_by = None
    try:
        for _ in range(args.count):
            pool = RunspacePool(wsman(args), configuration_name=args.configuration)
            pool.open()
            pools.append(pool)
    except Exception as error:
        stopped_by = describe(error)
    opened = len(pools)
    for pool in pools:
        pool.close()
    return {"opened": opened, "error": stopped_by} if stopped_by else {"opened": opened}


# ----- pywinrm -----


def session(args):
    import winrm

    url = "%s://%s:%d/wsman" % (args.scheme, args.host, args.port)
    kwargs = dict(
        auth=(args.user, args.password),
        transport=args.auth,
        operation_timeout_sec=args.operation_timeout,
        read_timeout_sec=args.operation_timeout + 10,
    )
    if args.scheme == "https":
        kwargs["server_cert_validation"] = "validate"
        if args.ca:
            kwargs["ca_trust_path"] = args.ca
    if args.encryption != "auto":
        kwargs["message_encryption"] = args.encryption
    return winrm.Session(url, **kwargs)


def result_of(r):
    return {
        "status_code": r.status_code,
        "std_out": r.std_out.decode("utf-8", "replace"),
        "std_err": r.std_err.decode("utf-8", "replace"),
    }


def pywinrm_cmd(args):
    return result_of(session(args).run_cmd(args.command, args.arg))


def pywinrm_ps(args):
    return result_of(session(args).run_ps(args.script))


SCENARIOS = {
    "pypsrp_execute_ps": pypsrp_execute_ps,
    "pypsrp_pool": pypsrp_pool,
    "pypsrp_shells": pypsrp_shells,
    "pywinrm_cmd": pywinrm_cmd,
    "pywinrm_ps": pywinrm_ps,
}


if __name__ == "__main__":
    main()

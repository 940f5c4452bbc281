"""The pywinrm row: Session.run_ps on every host from a ThreadPoolExecutor of
`--concurrency` workers, NTLM with message encryption over HTTP (TLS alone over HTTPS).
run_ps runs `powershell -encodedcommand` in a WinRS cmd shell (pywinrm's design)."""

from common import parse_args, read_password, read_rows, run_pool

import winrm


def main():
    args = parse_args(__doc__)
    rows = read_rows(args)
    password = read_password(args)
    read_timeout = max(args.request_timeout_ms // 1000, 31)

    def one(row):
        https = row["scheme"] == "https"
        url = f"{row['scheme']}://{row['address']}:{row['port']}/wsman"
        options = {}
        if https:
            options["server_cert_validation"] = "validate" if args.ca else "ignore"
            if args.ca:
                options["ca_trust_path"] = args.ca
        session = winrm.Session(
            url,
            auth=(args.user, password),
            transport="ntlm",
            message_encryption="auto" if https else "always",
            read_timeout_sec=read_timeout,
            operation_timeout_sec=read_timeout - 10,
            **options,
        )
        result = session.run_ps(args.script)
        if result.status_code != 0:
            return None
        return result.std_out.decode("utf-8", "replace")

    run_pool(args, rows, one)


if __name__ == "__main__":
    main()

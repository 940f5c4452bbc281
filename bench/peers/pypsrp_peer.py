"""The pypsrp row: Client.execute_ps on every host from a ThreadPoolExecutor of
`--concurrency` workers, NTLM with message encryption over HTTP (TLS alone over HTTPS)."""

from common import parse_args, read_password, read_rows, run_pool

from pypsrp.client import Client


def main():
    args = parse_args(__doc__)
    rows = read_rows(args)
    password = read_password(args)

    def one(row):
        https = row["scheme"] == "https"
        client = Client(
            row["address"],
            port=int(row["port"]),
            username=args.user,
            password=password,
            ssl=https,
            auth="ntlm",
            encryption="auto" if https else "always",
            cert_validation=(args.ca or False) if https else True,
            connection_timeout=args.connect_timeout_ms / 1000.0,
            read_timeout=args.request_timeout_ms / 1000.0,
        )
        output, _streams, had_errors = client.execute_ps(args.script)
        return None if had_errors else output

    run_pool(args, rows, one)


if __name__ == "__main__":
    main()

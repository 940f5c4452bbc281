//! WinRS client shell and command state machine (MS-WSMV 3.1.4.1.29). See issue 2.

//! WS-Management envelopes, actions, faults and the WinRM config (MS-WSMV). See issue 2.

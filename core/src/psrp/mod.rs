//! PowerShell Remoting Protocol: fragments, messages, CLIXML, state machines (MS-PSRP). See issue 2.

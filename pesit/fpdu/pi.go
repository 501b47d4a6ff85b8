package fpdu

// PI is a parameter identifier code (spec §4.7.3). PGI codes share the space.
type PI uint8

// Hors-SIT parameters (digest §3.2).
const (
	PICRC            PI = 1
	PIDiagnostic     PI = 2
	PIRequesterID    PI = 3
	PIServerID       PI = 4
	PIAccessControl  PI = 5 // password; redacted in every dump
	PIVersion        PI = 6
	PISyncOption     PI = 7
	PIFileType       PI = 11
	PIFileName       PI = 12
	PITransferID     PI = 13
	PIAttributes     PI = 14
	PIRestart        PI = 15
	PIDataCode       PI = 16
	PIPriority       PI = 17
	PIRestartPoint   PI = 18
	PIEndCode        PI = 19
	PISyncNumber     PI = 20
	PICompression    PI = 21
	PIAccessType     PI = 22
	PIResync         PI = 23
	PIEntitySize     PI = 25
	PIWatchdog       PI = 26
	PIByteCount      PI = 27
	PIArticleCount   PI = 28
	PIDiagComplement PI = 29
	PIArticleFormat  PI = 31
	PIArticleLength  PI = 32
	PIOrganisation   PI = 33
	PILabel          PI = 37
	PIKeyLength      PI = 38
	PIKeyOffset      PI = 39
	PISpaceUnit      PI = 41
	PISpaceMax       PI = 42
	PICreated        PI = 51
	PIExtracted      PI = 52
	PIClientID       PI = 61
	PIBankID         PI = 62
	PIMessage        PI = 91
	PIFreeMessage    PI = 99
)

// Parameter group identifiers.
const (
	PGIFileID     PI = 9
	PGILogical    PI = 30
	PGIPhysical   PI = 40
	PGIHistorical PI = 50
)

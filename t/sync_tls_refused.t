#!/usr/bin/perl

# zone_sync over TLS, what is refused: with zone_sync_ssl_verify on, an
# untrusted certificate, a name mismatch (fixed by zone_sync_ssl_name), a
# revoked certificate (zone_sync_ssl_crl) and a chain deeper than
# zone_sync_ssl_verify_depth; a listener demanding a client certificate
# refuses a node without one, or with one from another CA; mismatched
# protocols; a plaintext node against a TLS listener, and the reverse.
#
# Each case: node 0 connects to node 1 and is refused.  Node 0 logs one
# error line naming node 1 and the reason, and keeps retrying every
# zone_sync_connect_retry_interval (200ms) without logging it again; a
# record written on node 0 never reaches node 1, while node 1's records
# reach node 0 (the other direction, TLS that works: the cluster is up);
# once the configuration is fixed and reloaded, the record arrives.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream stream_ssl zone_sync/)
	->has_daemon('openssl');

my $certs = $c->testdir . '/certs';
make_certs($certs);

$c->plan(42);

# a listener refusing a node's client certificate shuts the connection down
# while the node's first frame is in flight: nginx < 1.25 logs that at crit
# (SSL_R_APPLICATION_DATA_AFTER_CLOSE_NOTIFY), later versions at info
$c->node($_)->ignore_log(qr/SSL_shutdown\(\) failed \(SSL: .*application data after close notify\)/)
	for 0 .. 1;

my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    log_format conn '$msec $status $ssl_protocol $ssl_cipher';

    server {
        listen 127.0.0.1:%%NODE_SYNC%% @SSL@;
        access_log %%TESTDIR%%/sync.log conn;
@LISTENER@

        zone_sync;
        zone_sync_server 127.0.0.1:@PEER@;
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
@CLIENT@
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval $arg_k $hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

# TLS settings that work, used wherever a case changes nothing
my $tls_listener = <<"EOF";
ssl_certificate $certs/node.crt;
ssl_certificate_key $certs/node.key;
EOF

my $tls_client = <<"EOF";
zone_sync_ssl on;
zone_sync_ssl_verify on;
zone_sync_ssl_trusted_certificate $certs/ca.crt;
EOF

# node $i's nginx.conf; it connects to the other node
#   plain    => a plaintext listener
#   listener => the listener's ssl_* lines (default $tls_listener)
#   client   => the zone_sync_ssl_* lines (default $tls_client)
sub conf {
	my ($i, %o) = @_;
	my $conf = $template;
	my $ssl = $o{plain} ? '' : 'ssl';
	my $listener = $o{plain} ? '' : $o{listener} // $tls_listener;
	$conf =~ s/\@SSL\@/$ssl/;
	$conf =~ s/\@LISTENER\@/indent($listener)/e;
	$conf =~ s/\@PEER\@/$c->sync_port(1 - $i)/e;
	$conf =~ s/\@CLIENT\@/indent($o{client} \/\/ $tls_client)/e;
	$c->node($i)->write_file_expand('nginx.conf', $c->expand_node($i, $conf));
}

sub indent {
	my ($s) = @_;
	$s =~ s/^(?=.)/        /mg;
	$s =~ s/\n$//;
	return $s;
}

conf($_) for 0, 1;
$c->run();

###############################################################################

sub get {
	my ($i, $k) = @_;
	my $r = $c->http_get($i, "/get?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	$c->http_get($i, "/set?k=$k&v=$v");
}

sub on {
	my ($i, $k, $v) = @_;
	return wait_for(sub { (get($i, $k) // '') eq $v }, timeout => 10);
}

sub file_size { length($c->node($_[0])->read_file($_[1]) // '') }

sub since {
	my ($i, $file, $offset) = @_;
	return substr($c->node($i)->read_file($file) // '', $offset);
}

# the error lines node 0 logged about node 1 since $offset: its own
# ("zone_sync: node <addr>: ...") and nginx's ("..., node: <addr>")
sub errors {
	my ($offset) = @_;
	my $node1 = '127.0.0.1:' . $c->sync_port(1);
	my @all = grep { /\[(?:error|crit|alert|emerg)\]/ && /\Q$node1\E/ }
		split /\n/, since(0, 'error.log', $offset);
	my @own = grep { /zone_sync: node \Q$node1\E: / } @all;
	return (\@own, \@all);
}

# connections node 1 accepted (and closed) since $offset: their end times
sub attempts {
	my ($offset) = @_;
	return map { /^(\d+\.\d+) / ? $1 : () } split /\n/,
		since(1, 'sync.log', $offset);
}

# restarts node 1; the harness's probe of its sync port, which shows in
# sync.log once the new worker has accepted it, is waited for, so that it
# is not taken for an attempt of node 0
sub restart_listener {
	my $offset = file_size(1, 'sync.log');
	$c->stop_node(1);
	$c->start_node(1);
	wait_for(sub { file_size(1, 'sync.log') > $offset }, timeout => 5);
}

my $n = 0;

# refused($name, node0 => {...}, node1 => {...}, reason => qr//,
#     fix => sub { ... })
#
# Starts node 1, then node 0, with these conf() options; writes a record
# on each; waits for 6 connection attempts of node 0 at node 1; checks
# the error lines, that node 0's record did not cross while node 1's did,
# then calls fix (which reconfigures and reloads) and waits for the record.
sub refused {
	my ($name, %o) = @_;
	$n++;

	$c->stop_node(0);
	conf(1, %{$o{node1} // {}});
	restart_listener();

	my $log0 = file_size(0, 'error.log');
	my $log1 = file_size(1, 'sync.log');

	conf(0, %{$o{node0} // {}});
	$c->start_node(0);

	set(0, "r$n", 'from0');
	set(1, "c$n", 'from1');

	# the mean time between attempts: the retry interval (200ms) plus a
	# connection and a handshake
	my @t;
	wait_for(sub { (@t = attempts($log1)) >= 6 }, timeout => 10);
	my $gap = @t >= 2 ? ($t[-1] - $t[0]) / $#t : 0;

	my ($own, $all) = errors($log0);
	my $node1 = '127.0.0.1:' . $c->sync_port(1);
	like($own->[0] // '', qr/zone_sync: node \Q$node1\E: $o{reason}/,
		"$name: error logged with the reason");
	like(join("\n", @$all), $o{nginx}, "$name: nginx's SSL error logged")
		if $o{nginx};
	like($c->node(1)->read_file('error.log'), $o{listener},
		"$name: the listener says why")
		if $o{listener};
	ok(@t >= 6 && $gap > 0.15 && $gap < 0.6 && @$own == 1 && @$all <= 2,
		"$name: logged once while retrying every 200ms")
		or diag(scalar(@t) . " attempts, every $gap s, errors:\n"
			. join("\n", @$all));

	my $other_way = on(0, "c$n", 'from1');
	is((get(1, "r$n") // 'none') . ($other_way ? ', other way synced' : ''),
		', other way synced', "$name: node 0's record does not cross");

	$o{fix}->();
	ok(on(1, "r$n", 'from0'), "$name: synced once fixed");
}

###############################################################################

# node 1's certificate from a CA node 0 does not trust; fixed by trusting
# that CA too

refused('untrusted certificate',
	node1 => { listener => tls_listener('rogue') },
	reason => qr/certificate verify failed: \(2[01]:unable to /,
	fix => sub {
		conf(0, client => tls_client(trusted => 'both-ca'));
		$c->reload_node(0);
	});

# node 1's certificate names named.test only; node 0 verifies 127.0.0.1
# by default, named.test with zone_sync_ssl_name

refused('name mismatch',
	node1 => { listener => tls_listener('named') },
	reason => qr/certificate does not match "127\.0\.0\.1"/,
	fix => sub {
		conf(0, client => tls_client() . "zone_sync_ssl_name named.test;\n");
		$c->reload_node(0);
	});

# a revoked certificate: accepted without the CRL, refused with it; fixed
# by node 1 presenting a valid certificate (the CRL still loaded)

$c->stop_node(0);
conf(1, listener => tls_listener('revoked'));
restart_listener();
conf(0);
$c->start_node(0);
set(0, 'revoked', 'accepted');
ok(on(1, 'revoked', 'accepted'), 'revoked certificate: accepted without a CRL');

refused('revoked certificate',
	node1 => { listener => tls_listener('revoked') },
	node0 => { client => tls_client() . "zone_sync_ssl_crl $certs/ca.crl;\n" },
	reason => qr/certificate verify failed: \(23:certificate revoked\)/,
	fix => sub {
		conf(1, listener => tls_listener('node'));
		$c->reload_node(1);
	});

# a chain of two intermediate CAs: deeper than the default depth 1, which
# allows one (OpenSSL stops looking for issuers at the depth, and reports
# the issuer of the last certificate it looked at as not found: error 20)

refused('chain too deep',
	node1 => { listener => tls_listener('deep-chain', 'deep') },
	reason => qr/certificate verify failed: \((?:20|22):/,
	fix => sub {
		conf(0, client => tls_client() . "zone_sync_ssl_verify_depth 2;\n");
		$c->reload_node(0);
	});

# node 1 demands a client certificate (ssl_client_certificate): node 0
# sends none; fixed by sending one.  The listener completes the handshake,
# then closes the connection: node 0 can only say where that happened.

my $cert_refused = qr/connection closed by peer after the TLS handshake, (?#
	)before its HELLO \(client certificate refused\?\)$/;

my $node1_log = file_size(1, 'error.log');

refused('no client certificate',
	node1 => { listener => tls_listener('node')
		. "ssl_verify_client on;\nssl_client_certificate $certs/ca.crt;\n" },
	reason => $cert_refused,
	fix => sub {
		conf(0, client => tls_client() . client_cert('node'));
		$c->reload_node(0);
	});

like(since(1, 'error.log', $node1_log), qr/client sent no required SSL certificate/,
	'no client certificate: the listener says why');

# the same with ssl_trusted_certificate, and a certificate from another
# CA: refused; fixed by sending the right one

$node1_log = file_size(1, 'error.log');

refused('untrusted client certificate',
	node1 => { listener => tls_listener('node')
		. "ssl_verify_client on;\n"
		# nginx < 1.27.2 requires ssl_client_certificate for ssl_verify_client
		. ($c->node(1)->has_version('1.27.2')
			? 'ssl_trusted_certificate' : 'ssl_client_certificate')
		. " $certs/ca.crt;\n" },
	node0 => { client => tls_client() . client_cert('rogue') },
	reason => $cert_refused,
	fix => sub {
		conf(0, client => tls_client() . client_cert('node'));
		$c->reload_node(0);
	});

like(since(1, 'error.log', $node1_log), qr/client SSL certificate verify error/,
	'untrusted client certificate: the listener says why');

# no protocol in common: the handshake fails (nginx logs the SSL error,
# then node 0 its own line, once each)

refused('protocol mismatch',
	node1 => { listener => tls_listener('node') . "ssl_protocols TLSv1.3;\n" },
	node0 => { client => tls_client() . "zone_sync_ssl_protocols TLSv1.2;\n" },
	reason => qr/SSL handshake failed$/,
	nginx => qr/SSL_do_handshake\(\) failed .*protocol version.*node: 127/,
	fix => sub {
		conf(0, client => tls_client()
			. "zone_sync_ssl_protocols TLSv1.2 TLSv1.3;\n");
		$c->reload_node(0);
	});

# a plaintext node against a TLS listener; fixed by zone_sync_ssl on

refused('plaintext to TLS',
	node0 => { client => '' },
	reason => qr/connection closed by peer$/,
	fix => sub {
		conf(0);
		$c->reload_node(0);
	});

# a TLS node against a plaintext listener; fixed by "listen ... ssl"

refused('TLS to plaintext',
	node1 => { plain => 1 },
	reason => qr/SSL handshake failed$/,
	# the listener recognises the TLS record and closes at once
	nginx => qr/(SSL_do_handshake\(\) failed|peer closed connection in SSL handshake).*node: 127/,
	listener => qr/\[info\].*zone_sync: node 127\.0\.0\.1: sent a TLS handshake, but this listener has no "ssl"/,
	fix => sub {
		conf(1);
		$c->reload_node(1);
	});

###############################################################################

sub tls_listener {
	my ($crt, $key) = @_;
	$key //= $crt;
	return "ssl_certificate $certs/$crt.crt;\n"
		. "ssl_certificate_key $certs/$key.key;\n";
}

sub tls_client {
	my (%o) = @_;
	my $trusted = $o{trusted} // 'ca';
	return "zone_sync_ssl on;\nzone_sync_ssl_verify on;\n"
		. "zone_sync_ssl_trusted_certificate $certs/$trusted.crt;\n";
}

sub client_cert {
	my ($name) = @_;
	return "zone_sync_ssl_certificate $certs/$name.crt;\n"
		. "zone_sync_ssl_certificate_key $certs/$name.key;\n";
}

# ca: the cluster's CA, signing node (127.0.0.1 and node.test), named
# (named.test only), revoked (in ca.crl) and, through int1 and int2, deep;
# rogue-ca, unknown to the nodes, signing rogue
sub make_certs {
	my ($d) = @_;
	mkdir $d or die "mkdir $d: $!";

	my $openssl = sub {
		my ($cmd) = @_;
		system("cd $d && openssl $cmd >>openssl.log 2>&1") == 0
			or die "openssl $cmd failed:\n"
				. (Test::Nginx::Util::slurp("$d/openssl.log") // '');
	};
	my $spit = sub { Test::Nginx::Util::spit("$d/$_[0]", $_[1]) };
	my $cat = sub { join '', map { Test::Nginx::Util::slurp("$d/$_") } @_ };

	$spit->('openssl.cnf', <<'EOF');
[ req ]
distinguished_name = dn
[ dn ]
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $ENV::SAN
[ ca ]
default_ca = ca_default
[ ca_default ]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 30
EOF
	$spit->('index.txt', '');
	$spit->('crlnumber', "01\n");

	# the configuration file reads $ENV::SAN even where it does not use it
	local $ENV{SAN} = 'IP:127.0.0.1';

	my $serial = 1;
	my $key = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
	my $make = sub {
		my ($name, $issuer, $ext, $san) = @_;
		local $ENV{SAN} = $san if defined $san;
		if (!defined $issuer) {
			$openssl->("req -x509 -new $key -days 30 -subj /CN=$name "
				. "-config openssl.cnf -extensions $ext "
				. "-keyout $name.key -out $name.crt");
			return;
		}
		$openssl->("req -new $key -subj /CN=$name -config openssl.cnf "
			. "-keyout $name.key -out $name.csr");
		$openssl->("x509 -req -in $name.csr -CA $issuer.crt "
			. "-CAkey $issuer.key -set_serial " . $serial++ . ' -days 30 '
			. "-extfile openssl.cnf -extensions $ext -out $name.crt");
	};

	$make->('ca', undef, 'ca_ext');
	$make->('rogue-ca', undef, 'ca_ext');
	$make->('int1', 'ca', 'ca_ext');
	$make->('int2', 'int1', 'ca_ext');

	$make->('node', 'ca', 'leaf_ext', 'IP:127.0.0.1,DNS:node.test');
	$make->('named', 'ca', 'leaf_ext', 'DNS:named.test');
	$make->('revoked', 'ca', 'leaf_ext');
	$make->('deep', 'int2', 'leaf_ext');
	$make->('rogue', 'rogue-ca', 'leaf_ext');

	$spit->('deep-chain.crt', $cat->(qw/deep.crt int2.crt int1.crt/));
	$spit->('both-ca.crt', $cat->(qw/ca.crt rogue-ca.crt/));

	$openssl->('ca -config openssl.cnf -keyfile ca.key -cert ca.crt '
		. '-revoke revoked.crt');
	$openssl->('ca -config openssl.cnf -keyfile ca.key -cert ca.crt '
		. '-gencrl -out ca.crl');
}

###############################################################################

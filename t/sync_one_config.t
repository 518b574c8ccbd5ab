#!/usr/bin/perl

# One configuration for every node: the zone_sync_server list names every
# node, this one included, and the files differ only in the listen
# addresses.  A node skips the entries it listens on: exactly (127.0.0.x
# with one port for all), or through a wildcard "listen PORT" on one of
# the host's addresses.  None connects to itself, not even to find out
# from the HELLO that it is itself.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(4)->has(qw/http stream zone_sync/)->plan(7);

my $P = port(8081);
my $W = port(8082);

# nodes 0..2 listen on 127.0.0.1..3, port $P; node 3 on the wildcard
# address, port $W, and is known by one of this host's addresses: a
# non-loopback one if there is one
my ($host) = `ip -4 -o addr show scope global 2>/dev/null` =~ m{inet (\d+\.\d+\.\d+\.\d+)/};
$host //= '127.0.0.4';

my @listen = ("127.0.0.1:$P", "127.0.0.2:$P", "127.0.0.3:$P", $W);
my @addr = ("127.0.0.1:$P", "127.0.0.2:$P", "127.0.0.3:$P", "$host:$W");

my $servers = join "\n", map { "        zone_sync_server $_;" } @addr;

$c->write_file_expand(sub {
	my ($i) = @_;
	my $conf = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen @LISTEN@;
        zone_sync;
@SERVERS@
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
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
	$conf =~ s/\@LISTEN\@/$listen[$i]/;
	$conf =~ s/\@SERVERS\@/$servers/;
	return $conf;
});

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
	my ($k, $v, @nodes) = @_;
	return wait_for(sub {
		!grep { (get($_, $k) // '') ne $v } @nodes
	}, timeout => 10);
}

sub log_of { $c->node($_[0])->read_file('error.log') // '' }

###############################################################################

my @confs = map {
	my ($i) = $_;
	my $conf = $c->node($i)->read_file('nginx.conf');
	my $dir = $c->node($i)->testdir;
	$conf =~ s/\Q$dir\E/DIR/g;
	$conf =~ s/^(\s*listen\s+)\Q$listen[$i]\E;/${1}ADDR;/m;
	$conf =~ s/127\.0\.0\.1:${\$c->http_port($i)};/HTTP;/;
	$conf;
} 0 .. 3;
ok(!grep({ $_ ne $confs[0] } @confs),
	'nodes differ only in listen addresses (and the test\'s http port)');

set(0, 'k0', 'zero');
ok(on('k0', 'zero', 1, 2, 3), 'write on node 0 reaches every other node');
set(3, 'k3', 'three');
ok(on('k3', 'three', 0, 1, 2), 'write on the wildcard node reaches every other node');

my @self = grep {
	my $log = log_of($_);
	$log =~ /connected to node \Q$addr[$_]\E/ || $log =~ /is this node, not syncing/;
} 0 .. 3;
is("@self", '', 'no node connects to itself');

SKIP: {
skip 'no debug log', 2 unless $c->has_module('debug');

ok(!grep({ log_of($_) !~ /zone_sync: node \Q$addr[$_]\E is this node$/m } 0 .. 2),
	'listen address: skipped as this node');
like(log_of(3), qr/zone_sync: node \Q$addr[3]\E is this node$/m,
	"wildcard listen, $host: skipped as this node");
}

my @others;
wait_for(sub {
	@others = grep {
		my $i = $_;
		grep { $_ != $i && log_of($i) !~ /connected to node \Q$addr[$_]\E/ } 0 .. 3;
	} 0 .. 3;
	!@others;
}, timeout => 10);
is("@others", '', 'every node connects to the three others');

###############################################################################

#!/usr/bin/perl

# sync_limit_req* against nginx's own limit_req* on one node: the scenarios
# of nginx's limit_req tests (burst, nodelay, delay=, rejects not counted,
# status code, dry run, log levels, several limits in one location,
# inheritance, empty keys, internal redirects, configuration errors) run
# against three servers with the same configuration: stock limit_req, ours
# without "sync", and ours with "sync" on a one-node cluster. Every
# outcome must be the same.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Time::HiRes qw/ time sleep /;

use Test::Nginx;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http stream zone_sync/)->plan(55);

# The same server three times: %%P%% is the directive prefix, %%Z%% the
# zone name prefix, %%SYNC%% the zone parameter.
my $server = <<'EOF';
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%one:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%fast:1m rate=1000r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%burst:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%dl:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%dry:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%drydl:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%lvl:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%lvd:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%ma:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%mb:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%mda:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%mdb:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%srv:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%ovr:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $http_x_key zone=%%Z%%key:1m rate=2r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%loose:1m rate=100r/s%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%tight:1m rate=1r/m%%SYNC%%;
    %%P%%limit_req_zone $binary_remote_addr zone=%%Z%%min:1m rate=120r/m%%SYNC%%;

    server {
        listen       127.0.0.1:%%PORT%%;
        server_name  localhost;
        root         %%TESTDIR%%;

        add_header X-Status "[$%%P%%limit_req_status]" always;

        %%P%%limit_req zone=%%Z%%srv nodelay;

        location /one { %%P%%limit_req zone=%%Z%%one burst=1 nodelay; }
        location /status {
            %%P%%limit_req zone=%%Z%%one burst=1 nodelay;
            %%P%%limit_req_status 501;
        }
        location /fast { %%P%%limit_req zone=%%Z%%fast burst=1; }
        location /burst { %%P%%limit_req zone=%%Z%%burst burst=5; }
        location /delay { %%P%%limit_req zone=%%Z%%dl burst=3 delay=1; }
        location /dry {
            %%P%%limit_req zone=%%Z%%dry burst=1 nodelay;
            %%P%%limit_req_dry_run on;
        }
        location /drydelay {
            %%P%%limit_req zone=%%Z%%drydl burst=2;
            %%P%%limit_req_dry_run on;
        }
        location /level {
            %%P%%limit_req zone=%%Z%%lvl nodelay;
            %%P%%limit_req_log_level warn;
        }
        location /leveldelay {
            %%P%%limit_req zone=%%Z%%lvd burst=1;
            %%P%%limit_req_log_level warn;
        }
        location /multi {
            %%P%%limit_req zone=%%Z%%ma burst=2 nodelay;
            %%P%%limit_req zone=%%Z%%mb nodelay;
        }
        location /ma { %%P%%limit_req zone=%%Z%%ma burst=2 nodelay; }
        location /multidelay {
            %%P%%limit_req zone=%%Z%%mda burst=5;
            %%P%%limit_req zone=%%Z%%mdb burst=5 delay=1;
        }
        location /inherit { }
        location /override { %%P%%limit_req zone=%%Z%%ovr burst=1 nodelay; }
        location /key { %%P%%limit_req zone=%%Z%%key nodelay; }
        location /tf {
            %%P%%limit_req zone=%%Z%%loose burst=10 nodelay;
            try_files /nonexistent /t2.html;
        }
        location = /t2.html { %%P%%limit_req zone=%%Z%%tight nodelay; }
        location /minute { %%P%%limit_req zone=%%Z%%min burst=1 nodelay; }
    }
EOF

my %variants = (
	stock  => { port => 8080, p => '', z => 'stock_', sync => '' },
	sync   => { port => 8081, p => 'sync_', z => 'sync_', sync => '' },
	synced => { port => 8082, p => 'sync_', z => 'synced_', sync => ' sync' },
);
my @ours = qw/ sync synced /;

my $servers = '';
for my $v (sort keys %variants) {
	my $s = $server;
	my $o = $variants{$v};
	$s =~ s/%%P%%/$o->{p}/g;
	$s =~ s/%%Z%%/$o->{z}/g;
	$s =~ s/%%SYNC%%/$o->{sync}/g;
	$s =~ s/%%PORT%%/$o->{port}/g;
	$servers .= $s;
}

$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:8083;
        zone_sync;
        zone_sync_server 127.0.0.1:8083;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

$servers
}

EOF

for my $f (qw/ one status fast burst delay dry drydelay level leveldelay
	multi ma multidelay inherit override key tf t2 minute /)
{
	$t->write_file("$f.html", "X${f}X");
}

$t->run();

###############################################################################

# Each scenario is a sub called with a request function for one server; it
# returns a list of outcomes. It runs against every server in turn (their
# zones are distinct), and ours must give stock's outcomes.

sub req {
	my ($port, $uri, %h) = @_;
	my $headers = join '', map { "$_: $h{$_}\r\n" } sort keys %h;
	my $start = time();
	my $r = http("GET $uri HTTP/1.0\r\nHost: localhost\r\n$headers\r\n",
		port => port($port));
	my $took = time() - $start;
	my ($code) = $r =~ m!^HTTP/1\.. (\d+)!;
	my ($status) = $r =~ /^X-Status: \[(.*)\]\r$/m;
	return { code => $code // 0, status => $status // '-', took => $took };
}

# outcome of a request: "code status"; with $timed, also "slow"/"fast"
sub outcome {
	my ($r, $timed) = @_;
	my $s = "$r->{code} $r->{status}";
	$s .= $r->{took} >= 0.3 ? ' slow' : ' fast' if $timed;
	return $s;
}

sub scenario {
	my ($name, $code, $expect) = @_;
	my %got;
	for my $v ('stock', @ours) {
		my $port = $variants{$v}{port};
		$got{$v} = [ $code->(sub { req($port, @_) }) ];
	}
	is_deeply($got{stock}, $expect, "$name: stock limit_req")
		or diag(explain($got{stock}));
	for my $v (@ours) {
		is_deeply($got{$v}, $got{stock}, "$name: $v")
			or diag(explain($got{$v}));
	}
}

# Time passing is an input of a rate limiter, not a wait for something to
# happen: the scenarios let the bucket drain a known amount, as nginx's own
# limit_req tests do. Nothing here waits for sync.
sub elapse {
	my ($seconds) = @_;
	Time::HiRes::sleep($seconds);
}

scenario('burst=1 nodelay, status code, rejects not counted', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/one.html')) } 1 .. 3;
	push @o, outcome($get->('/status.html'));
	elapse(0.6);
	push @o, outcome($get->('/one.html'));
	return @o;
}, [ '200 PASSED', '200 PASSED', '503 REJECTED', '501 REJECTED',
	'200 PASSED' ]);

scenario('negative excess', sub {
	my ($get) = @_;
	my @o = outcome($get->('/fast.html'));
	elapse(0.1);
	push @o, outcome($get->('/fast.html'));
	return @o;
}, [ '200 PASSED', '200 PASSED' ]);

scenario('burst delays', sub {
	my ($get) = @_;
	return map { outcome($get->('/burst.html'), 1) } 1 .. 2;
}, [ '200 PASSED fast', '200 DELAYED slow' ]);

scenario('delay=', sub {
	my ($get) = @_;
	return map { outcome($get->('/delay.html'), 1) } 1 .. 3;
}, [ '200 PASSED fast', '200 PASSED fast', '200 DELAYED slow' ]);

scenario('dry run', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/dry.html'), 1) } 1 .. 4;
	push @o, map { outcome($get->('/drydelay.html'), 1) } 1 .. 2;
	return @o;
}, [ '200 PASSED fast', '200 PASSED fast', '200 REJECTED_DRY_RUN fast',
	'200 REJECTED_DRY_RUN fast', '200 PASSED fast',
	'200 DELAYED_DRY_RUN fast' ]);

scenario('log level', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/level.html')) } 1 .. 2;
	push @o, map { outcome($get->('/leveldelay.html'), 1) } 1 .. 2;
	return @o;
}, [ '200 PASSED', '503 REJECTED', '200 PASSED fast', '200 DELAYED slow' ]);

scenario('several limits: a rejection charges none', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/multi.html')) } 1 .. 3;
	push @o, map { outcome($get->('/ma.html')) } 1 .. 3;
	return @o;
}, [ '200 PASSED', '503 REJECTED', '503 REJECTED', '200 PASSED',
	'200 PASSED', '503 REJECTED' ]);

scenario('several limits: the longest delay', sub {
	my ($get) = @_;
	return map { outcome($get->('/multidelay.html'), 1) } 1 .. 2;
}, [ '200 PASSED fast', '200 DELAYED slow' ]);

scenario('inheritance', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/inherit.html')) } 1 .. 2;
	push @o, map { outcome($get->('/override.html')) } 1 .. 3;
	return @o;
}, [ '200 PASSED', '503 REJECTED', '200 PASSED', '200 PASSED',
	'503 REJECTED' ]);

scenario('empty key', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/key.html')) } 1 .. 3;
	push @o, map { outcome($get->('/key.html', 'X-Key' => 'a')) } 1 .. 2;
	push @o, outcome($get->('/key.html', 'X-Key' => 'b'));
	return @o;
}, [ '200 ', '200 ', '200 ', '200 PASSED', '503 REJECTED', '200 PASSED' ]);

scenario('limits apply once per request (internal redirect)', sub {
	my ($get) = @_;
	return map { outcome($get->($_)) } qw! /t2.html /t2.html /tf !;
}, [ '200 PASSED', '503 REJECTED', '200 PASSED' ]);

scenario('rate in r/m', sub {
	my ($get) = @_;
	my @o = map { outcome($get->('/minute.html')) } 1 .. 3;
	elapse(0.6);
	push @o, outcome($get->('/minute.html'));
	return @o;
}, [ '200 PASSED', '200 PASSED', '503 REJECTED', '200 PASSED' ]);

# log lines: same levels and texts, with the zone names

my $log = $t->read_file('error.log');
for my $v ('stock', @ours) {
	my $z = $variants{$v}{z};
	$variants{$v}{log} = [
		count($log, qr/\[error\] .*limiting requests, excess: [\d.]+ by zone "${z}one"/),
		count($log, qr/\[warn\] .*limiting requests, excess: [\d.]+ by zone "${z}lvl"/),
		count($log, qr/\[notice\] .*delaying request, excess: [\d.]+, by zone "${z}lvd"/),
		count($log, qr/\[error\] .*limiting requests, dry run, excess: [\d.]+ by zone "${z}dry"/),
		count($log, qr/\[warn\] .*delaying request, dry run, excess: [\d.]+, by zone "${z}drydl"/),
	];
}
is_deeply($variants{stock}{log}, [ 2, 1, 1, 2, 1 ], 'log: stock')
	or diag(explain($variants{stock}{log}));
for my $v (@ours) {
	is_deeply($variants{$v}{log}, $variants{stock}{log}, "log: $v")
		or diag(explain($variants{$v}{log}));
}

sub count {
	my ($text, $re) = @_;
	return scalar(() = $text =~ /$re/g);
}

###############################################################################

# configuration errors: the same messages, with the prefix

my @bad = (
	'%%P%%limit_req_zone $x zone=a rate=1r/s;',
	'%%P%%limit_req_zone $x zone=a:1k rate=1r/s;',
	'%%P%%limit_req_zone $x zone=a:1m rate=0r/s;',
	'%%P%%limit_req_zone $x zone=a:1m foo;',
	'%%P%%limit_req_zone $x rate=1r/s rate=2r/s;',
	"%%P%%limit_req_zone \$x zone=a:1m rate=1r/s;\n"
		. "    %%P%%limit_req_zone \$y zone=a:1m rate=1r/s;",
	'%%P%%limit_req burst=1;',
	"%%P%%limit_req_zone \$x zone=a:1m rate=1r/s;\n"
		. "    %%P%%limit_req zone=a burst=0;",
	"%%P%%limit_req_zone \$x zone=a:1m rate=1r/s;\n"
		. "    %%P%%limit_req zone=a delay=x;",
	"%%P%%limit_req_zone \$x zone=a:1m rate=1r/s;\n"
		. "    %%P%%limit_req zone=a foo;",
	"%%P%%limit_req_zone \$x zone=a:1m rate=1r/s;\n"
		. "    %%P%%limit_req zone=a; %%P%%limit_req zone=a;",
	'%%P%%limit_req zone=undeclared;',
	'%%P%%limit_req_status 600;',
	'%%P%%limit_req_status 503; %%P%%limit_req_status 503;',
	'%%P%%limit_req_log_level foo;',
	'%%P%%limit_req_dry_run maybe;',
);

for my $bad (@bad) {
	my %msg;
	for my $p ('', 'sync_') {
		(my $snippet = $bad) =~ s/%%P%%/$p/g;
		$t->write_file('bad.conf', $t->expand(<<"EOF"));
%%TEST_GLOBALS%%
events {
}
http {
    $snippet
}
EOF
		my ($code, $out) = $t->test_config('bad.conf');
		my ($m) = $out =~ /\[emerg\] (.*)/;
		$m //= "exit $code";
		$m =~ s/ in \S+:\d+$//;
		$m =~ s/sync_//g;
		$msg{$p} = $m;
	}
	(my $name = $bad) =~ s/%%P%%//g;
	$name =~ s/\s+/ /g;
	ok($msg{''} !~ /^exit / && $msg{'sync_'} eq $msg{''},
		"config error: $name")
		or diag("stock: $msg{''}\nours:  $msg{'sync_'}");
}

###############################################################################
